# bench/lib.sh: shell functions the bench/*.sh scripts share. Sourced, not run.
#
# A script sets its settings, then:
#   source "$ROOT/bench/lib.sh"
#   bench_init NAME          # root check, ROOT OUTDIR STAMP OUT (bench/out/NAME-STAMP.txt)
#   bench_install PKG...     # apt-get what is missing (plus postgresql-15, zstd, time)
#   bench_tmpdir             # T (temp dir under BENCH_TMP) and the cleanup trap
#   build_walgo              # WALGO (binary in $T/bin), WALGO_FROM
# Then it may use pg_init/pg_start/pg_stop/Q/pgbench, next_port, stats,
# ratio, pass, conditions and versions.
#
# Expected settings (each script gives them defaults): PGBIN, PORT_BASE,
# BENCH_TMP, KEEP_TMP; optional WALGO_REF / WALGO_BIN.

us_now() { local t=$EPOCHREALTIME; echo "${t//[.,]/}"; }
say() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

bench_init() { # NAME
  [[ $EUID -eq 0 ]] || { echo "run as root (Postgres runs as the postgres user via runuser)" >&2; exit 2; }
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  STAMP=$(date +%Y%m%d-%H%M%S)
  OUTDIR=$ROOT/bench/out
  OUT=$OUTDIR/$1-$STAMP.txt
}

# bench_install [PKG...]: installs with apt-get what is missing: PostgreSQL
# (unless PGBIN has it), zstd, /usr/bin/time, and the packages given whose
# command is not on PATH (package name = command name).
bench_install() {
  local need=() p
  dpkg -s postgresql-15 >/dev/null 2>&1 || [[ -x $PGBIN/initdb ]] || need+=(postgresql-15)
  command -v zstd >/dev/null || need+=(zstd)
  [[ -x /usr/bin/time ]] || need+=(time)
  for p in "$@"; do command -v "$p" >/dev/null || need+=("$p"); done
  if (( ${#need[@]} )); then
    say "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  [[ -x $PGBIN/initdb ]] || die "no PostgreSQL at $PGBIN (set PGBIN)"
  id postgres >/dev/null 2>&1 || die "no postgres OS user"
  if ! command -v go >/dev/null; then
    [[ -x /usr/local/go/bin/go ]] && PATH=$PATH:/usr/local/go/bin || die "go not found (Go 1.26 is needed to build walgo)"
  fi
}

# ---------------------------------------------------------------- temp dir, cleanup
STARTED=()          # data dirs of running clusters
BG_PIDS=()          # background jobs a script started
MOUNTS=()           # file systems a script mounted (unmounted at the end)
bench_tmpdir() {
  T=$(mktemp -d "$BENCH_TMP/walgo-bench.XXXXXX")
  chmod 755 "$T"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  local rc=$?
  set +e
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for d in "${STARTED[@]}"; do
    [[ -f $d/postmaster.pid ]] && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
  done
  # pgBackRest's async archive-push forks a detached worker; it exits once
  # its queue is empty. Wait for any process still using this run's config
  # files, then end stragglers by pid.
  local pids i
  for i in $(seq 1 50); do
    pids=$(pgrep -f -- "--config=$T/" || true)
    [[ -z $pids ]] && break
    sleep 0.2
  done
  [[ -n ${pids:-} ]] && kill $pids 2>/dev/null
  for d in "${MOUNTS[@]}"; do mountpoint -q "$d" && umount "$d"; done
  if [[ $KEEP_TMP == 1 ]]; then say "kept $T"; else rm -rf "$T"; fi
  exit $rc
}

PORT=${PORT_BASE:-55432}
next_port() { # a free loopback port
  while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$(( PORT + 1 )); done
  echo "$PORT"; PORT=$(( PORT + 1 ))
}

# ---------------------------------------------------------------- clusters
# pg_init DIR PORT ARCHIVE_COMMAND [extra conf lines]
pg_init() {
  local dir=$1 port=$2 cmd=$3 extra=${4:-}
  mkdir -p "$dir" "$T/sock"; chown postgres: "$dir" "$T/sock"
  as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust >"$dir/initdb.log" 2>&1 || die "initdb failed: $dir/initdb.log"
  cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$T/sock'
archive_mode = on
archive_command = '$cmd'
$extra
EOF
}
pg_start() { # DIR
  as_pg "$PGBIN/pg_ctl" -D "$1/data" -l "$1/postgres.log" -w start >/dev/null || die "postgres start failed: $1/postgres.log"
  STARTED+=("$1/data")
}
pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null; }
Q() { as_pg "$PGBIN/psql" -h "$T/sock" -p "$1" -U postgres -XAtq -v ON_ERROR_STOP=1 -c "$2" postgres; }
pgbench() { local port=$1; shift; as_pg "$PGBIN/pgbench" -h "$T/sock" -p "$port" -U postgres "$@" postgres; }

# nap SECONDS: a sleep that starts no process (read on a fifo that never
# gets data): the waits below must not take the CPU of what they time.
nap() {
  if [[ -z ${NAP_FD:-} ]]; then
    mkfifo "$T/.nap" 2>/dev/null || true
    exec {NAP_FD}<>"$T/.nap"
  fi
  read -rt "$1" -u "$NAP_FD" || true
}

# wait_archived PORT TARGET_WAL TIMEOUT_S: 0 once pg_stat_archiver has
# archived TARGET_WAL; ARCH_US is then its last_archived_time (µs since the
# epoch, the same clock as us_now), so polling adds no error to the timings.
# While TARGET_WAL's .ready file is there it looks at nothing else: a psql
# every 50 ms (runuser, psql and a backend each time) took an eighth of both
# cores from the archiving it timed.
wait_archived() {
  local port=$1 target=$2 limit=$(( $(us_now) + $3 * 1000000 )) r ready
  ready="$(Q "$port" "show data_directory")/pg_wal/archive_status/$target.ready"
  while :; do
    if [[ ! -e $ready ]]; then
      r=$(Q "$port" "select coalesce(last_archived_wal, '') >= '$target', (extract(epoch from last_archived_time) * 1000000)::bigint from pg_stat_archiver")
      if [[ ${r%%|*} == t ]]; then ARCH_US=${r#*|}; return 0; fi
    fi
    (( $(us_now) < limit )) || return 1
    nap 0.05
  done
}

# ---------------------------------------------------------------- numbers
# stats: numbers on stdin (one a line) -> "median p90" (nearest rank)
stats() {
  sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "nan nan"; exit }
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
    k = int(0.9 * NR); if (k < 0.9 * NR) k++
    printf "%.1f %.1f\n", m, a[k] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
# pass VALUE LIMIT le|gt -> met / MISSED / n/a
pass() { awk -v v="$1" -v lim="$2" -v op="$3" 'BEGIN { ok = (op == "le") ? (v + 0 <= lim + 0) : (v + 0 > lim + 0); print (v == "nan" || v == "" ? "n/a" : ok ? "met" : "MISSED") }'; }
conditions() {
  echo "nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); kernel $(uname -r)"
  echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
  free -m | awk '/^Mem:/ {printf "memory MiB: total %s, used %s, free %s, available %s\n", $2, $3, $4, $7}'
  df -hT "$T" | awk 'NR==2 {printf "disk %s (%s) for %s: size %s, used %s, avail %s\n", $1, $2, "'"$BENCH_TMP"'", $3, $4, $5}'
}
versions() {
  echo "walgo: $WALGO_FROM, $(go version | cut -d' ' -f3); $(pgbackrest version); zstd $(zstd --version | grep -o 'v[0-9.]*'); $("$PGBIN/postgres" --version | sed 's/^postgres (PostgreSQL) /PostgreSQL /')"
}

# ---------------------------------------------------------------- build walgo
# Default: the working tree as it is. WALGO_REF=HEAD (or any ref) builds that
# commit from `git archive` instead (other engineers' half-done edits in the
# tree cannot break the run); WALGO_BIN=/path uses a ready binary.
build_walgo() {
  mkdir -p "$T/bin" "$OUTDIR"
  if [[ -n ${WALGO_BIN:-} ]]; then
    cp "$WALGO_BIN" "$T/bin/walgo"; WALGO_FROM="binary $WALGO_BIN"
  elif [[ -n ${WALGO_REF:-} ]]; then
    say "building walgo from $WALGO_REF"
    mkdir -p "$T/src"
    (cd "$ROOT" && git archive "$WALGO_REF") | tar -x -C "$T/src" || die "git archive $WALGO_REF failed"
    (cd "$T/src" && go build -o "$T/bin/walgo" ./cmd/walgo) || die "go build failed"
    WALGO_FROM="commit $(cd "$ROOT" && git rev-parse --short "$WALGO_REF")"
  else
    say "building walgo from the working tree $ROOT"
    (cd "$ROOT" && go build -o "$T/bin/walgo" ./cmd/walgo) || die "go build failed (WALGO_REF=HEAD builds the last commit instead)"
    WALGO_FROM="working tree at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && [[ -n $(git status --porcelain 2>/dev/null | grep -v '^?? bench/' || true) ]] && echo ' with local changes' || true)"
  fi
  WALGO=$T/bin/walgo
}

# walgo_init URL: makes the walgo repository at URL (as postgres, who writes
# it later); a binary from before `walgo init` existed made it on first use.
walgo_init() {
  # Not `walgo --help | grep -q`: grep's early exit can kill walgo with
  # SIGPIPE, and under pipefail the init was then skipped.
  local help
  help=$("$WALGO" --help 2>/dev/null || true)
  if grep -qE '^ +init( |,)' <<<"$help"; then
    as_pg env WALGO_STORAGE="$1" "$WALGO" init >/dev/null || die "walgo init $1 failed"
  fi
}

# ---------------------------------------------------------------- timing
# time_as_pg RESFILE CMD...: runs CMD as postgres under /usr/bin/time -v and
# appends "wall_ms rss_MiB cpu_ms" to RESFILE: wall time from $EPOCHREALTIME
# (µs), CPU = user + sys of CMD and its children, RSS = the largest single
# process. T must belong to postgres (time writes its report there).
time_as_pg() {
  local res=$1 t0 t1 rc=0 tv=$T/time.$BASHPID.$RANDOM
  shift
  t0=$(us_now)
  as_pg /usr/bin/time -v -o "$tv" "$@" || rc=$?
  t1=$(us_now)
  if (( rc == 0 )); then
    awk -F': ' -v w=$(( t1 - t0 )) '/Maximum resident set size/ {r = $2 / 1024}
      /User time/ {c += $2} /System time/ {c += $2}
      END {printf "%.1f %.1f %.0f\n", w / 1000, r, c * 1000}' "$tv" >>"$res"
  fi
  rm -f "$tv"
  return "$rc"
}
