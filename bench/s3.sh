#!/usr/bin/env bash
# bench/s3.sh: walgo on an S3 server with a fixed round trip per request.
# versitygw on loopback behind bench/latencyproxy (internal/faultproxy: a
# fixed delay per request, requests counted by operation). Ratios within
# one run. See bench/README.md.
set -euo pipefail

SEGS=${SEGS:-20}                       # part 1: segments pushed per delay
DELAYS=${DELAYS:-"0 10 30"}            # part 1: ms per request
DRAIN_SCALE=${DRAIN_SCALE:-84}         # part 2: pgbench -i scale held back as .ready (~1 GiB of WAL)
DRAIN_DELAY=${DRAIN_DELAY:-10}         # part 2: ms per request
REPLAY_SEGS=${REPLAY_SEGS:-64}         # part 3: segments replayed after the base backup
REPLAY_DELAYS=${REPLAY_DELAYS:-"10 30"} # part 3: ms per request
RUNS=${RUNS:-3}                        # part 3: runs per mode, interleaved
DELETE_WAL=${DELETE_WAL:-10000}        # part 4: WAL files in the repository
DELETE_DELAY=${DELETE_DELAY:-10}       # part 4: ms per request
FETCH_DELAY=${FETCH_DELAY:-10}         # part 5: ms per request
LIST_N=${LIST_N:-1000}                 # part 6: sentinels listed
LIST_DELAY=${LIST_DELAY:-20}           # part 6: ms per request
PF_MIB=${PF_MIB:-1152}                 # part 7: size of the small pg_wal (tmpfs): recovery keeps restored segments until a restartpoint, ~64 here
PF_DELAY=${PF_DELAY:-10}               # part 7: ms per request
PARTS=${PARTS:-"push drain replay delete fetch list prefetch"} # which parts run
REPLAY_ALT=${REPLAY_ALT:-}             # part 3: a second walgo binary, replayed interleaved with the first (A/B)
WALG=${WALG:-}                         # a wal-g binary for part 1's WAL-G column (optional)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_TMP=${BENCH_TMP:-/var/tmp}
PORT_BASE=${PORT_BASE:-25432} # below the ephemeral range: thousands of S3 connections come and go
KEEP_TMP=${KEEP_TMP:-0}
BG_PIDS=() STARTED=() MOUNTS=()

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init s3
bench_install jq curl
bench_tmpdir
build_walgo
# Not walgo settings: walgo would warn about them in every server log line.
unset WALGO_REF WALGO_BIN
CONDITIONS_START=$(conditions)
(cd "$ROOT" && go build -o "$T/bin/latencyproxy" ./bench/latencyproxy) || die "go build ./bench/latencyproxy failed"
VGW=$(command -v versitygw || ls "${GOBIN:-$(go env GOPATH)/bin}/versitygw" 2>/dev/null || true)
[[ -x $VGW ]] || die "versitygw not found: go install github.com/versity/versitygw/cmd/versitygw@\$VERSITYGW_VERSION (scripts/versions)"
chown -R postgres: "$T"
# take_port VAR: a free loopback port into VAR (next_port in a subshell
# would hand out the same one twice)
take_port() { local p; p=$(next_port); PORT=$(( p + 1 )); printf -v "$1" "%s" "$p"; }

# ---------------------------------------------------------------- S3 + proxy
S3=$T/s3
mkdir -p "$S3/data/bench" "$S3/meta"
AK=bench$RANDOM SK=secret$RANDOM$RANDOM
take_port VGW_PORT
"$VGW" --access "$AK" --secret "$SK" --region us-east-1 --port "127.0.0.1:$VGW_PORT" --quiet \
  posix --sidecar "$S3/meta" "$S3/data" >"$S3/versitygw.log" 2>&1 &
BG_PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$VGW_PORT") 2>/dev/null && break; sleep 0.1; done
"$T/bin/latencyproxy" -target "http://127.0.0.1:$VGW_PORT" >"$S3/proxy.out" 2>&1 &
BG_PIDS+=($!)
for _ in $(seq 1 100); do grep -q '^control ' "$S3/proxy.out" 2>/dev/null && break; sleep 0.1; done
PROXY=$(awk '$1 == "proxy" {print $2}' "$S3/proxy.out")
CTL=$(awk '$1 == "control" {print $2}' "$S3/proxy.out")
[[ -n $PROXY && -n $CTL ]] || die "latencyproxy did not start: $S3/proxy.out"
delay() { curl -fsS -X POST "$CTL/delay?d=${1}ms" >/dev/null; }
reset_counts() { curl -fsS -X POST "$CTL/reset" >/dev/null; }
counts() { curl -fsS "$CTL/stats"; }
say "versitygw on 127.0.0.1:$VGW_PORT, latency proxy $PROXY"

# repo NAME: a walgo config file for s3://bench/NAME through the proxy
# (made with walgo init); prints its path.
repo() {
  local f=$T/walgo-$1.conf
  cat >"$f" <<EOF
WALGO_STORAGE=s3://bench/$1
WALGO_S3_ENDPOINT=$PROXY
WALGO_S3_PATH_STYLE=true
AWS_ACCESS_KEY_ID=$AK
AWS_SECRET_ACCESS_KEY=$SK
AWS_REGION=us-east-1
EOF
  chown postgres: "$f"; chmod 600 "$f"
  as_pg "$WALGO" --config "$f" init >"$T/init-$1.log" 2>&1 || die "walgo init s3://bench/$1 failed: $T/init-$1.log"
  echo "$f"
}
med() { stats | cut -d' ' -f1; }
# run_ratios A B: the ratios line by line of two files of times, and their median
run_ratios() {
  paste -d' ' "$1" "$2" | awk '{ r[NR] = $1 / $2; line = line (NR > 1 ? " " : "") sprintf("%.2f", r[NR]) }
    END {
      for (i = 2; i <= NR; i++) { v = r[i]; for (j = i - 1; j >= 1 && r[j] > v; j--) r[j + 1] = r[j]; r[j + 1] = v }
      m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
      printf "%s, median %.2f", line, m }'
}
want() { [[ " $PARTS " == *" $1 "* ]]; }
# sum_counts FILE: the proxy's counts, one JSON a line, summed into one
sum_counts() { jq -s '{requests: (map(.requests) | add), by_op: (map(.by_op) | reduce .[] as $m ({}; reduce ($m | to_entries[]) as $e (.; .[$e.key] += $e.value)))}' "$1"; }
# ops_per N: "OP n/N, ..." of summed counts on stdin
ops_per() { jq -r --argjson n "$1" '.by_op | to_entries | map("\(.key) \(.value / $n | . * 100 | round / 100)") | join(", ")'; }

# ================================================================ part 1
# Real segments: a cluster archiving with cp under pgbench.
if want push || want fetch; then
say "part 1: making real WAL segments"
P1=$T/p1; mkdir -p "$P1/wal"; chown postgres: "$P1" "$P1/wal"
take_port P1_PORT
pg_init "$P1/c" "$P1_PORT" "cp %p $P1/wal/%f"
pg_start "$P1/c"
pgbench "$P1_PORT" -i -s 10 -q >/dev/null 2>&1
pgbench "$P1_PORT" -n -c 2 -T 10 >/dev/null 2>&1
# More until the segments are there (a busy machine writes little in 10 s):
# pgbench -i again, ~10 segments each.
until (( $(Q "$P1_PORT" "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 17, 8))::bit(32)::int") >= SEGS + 3 )); do
  pgbench "$P1_PORT" -i -s 10 -q >/dev/null 2>&1
done
LAST=$(Q "$P1_PORT" "select pg_walfile_name(pg_switch_wal())")
wait_archived "$P1_PORT" "$LAST" 120 || die "part 1: archiving stalled"
pg_stop "$P1/c"
mapfile -t SEGLIST < <(ls "$P1/wal" | grep -E '^[0-9A-F]{24}$' | tail -n $(( SEGS + 1 )) | head -n "$SEGS")
(( ${#SEGLIST[@]} == SEGS )) || die "part 1: only ${#SEGLIST[@]} segments"
fi
want push && for d in $DELAYS; do
  for tool in walgo walg; do
    [[ $tool == walg && -z $WALG ]] && continue
    conf=""
    [[ $tool == walgo ]] && conf=$(repo "p1-$d")
    delay "$d"; reset_counts
    : >"$P1/$tool.$d.ms"
    for s in "${SEGLIST[@]}"; do
      # One pg_wal per tool and delay, as a server has: walgo reads the
      # repository's description on a pg_wal's first push only.
      w=$P1/run/$tool-$d/pg_wal; mkdir -p "$w"; cp "$P1/wal/$s" "$w/"; chown -R postgres: "$P1/run"
      if [[ $tool == walgo ]]; then
        as_pg env WALGO_UPLOAD_CONCURRENCY=1 bash -c 't0=$EPOCHREALTIME; "$1" --config "$2" wal-push "$3" 2>/dev/null || exit 1; t1=$EPOCHREALTIME; echo "$t0 $t1"' _ "$WALGO" "$conf" "$w/$s" \
          | awk '{printf "%.1f\n", ($2 - $1) * 1000}' >>"$P1/$tool.$d.ms" || die "walgo wal-push failed at $d ms"
      else
        as_pg env WALG_S3_PREFIX="s3://bench/walg-$d" AWS_ENDPOINT="$PROXY" AWS_S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID="$AK" \
          AWS_SECRET_ACCESS_KEY="$SK" AWS_REGION=us-east-1 WALG_COMPRESSION_METHOD=zstd \
          bash -c 't0=$EPOCHREALTIME; "$1" wal-push "$2" >/dev/null 2>&1 || exit 1; t1=$EPOCHREALTIME; echo "$t0 $t1"' _ "$WALG" "$w/$s" \
          | awk '{printf "%.1f\n", ($2 - $1) * 1000}' >>"$P1/$tool.$d.ms" || die "wal-g wal-push failed at $d ms"
      fi
    done
    counts >"$P1/$tool.$d.counts"
  done
done
p1_row() { # TOOL DELAY
  local f=$P1/$1.$2
  [[ -f $f.ms ]] || { printf '   %-6s %6s %10s\n' "$1" "$2" "-"; return; }
  printf '   %-6s %6s %10s %10s   %s\n' "$1" "$2" "$(med <"$f.ms")" \
    "$(jq -r --argjson n "$SEGS" '.requests / $n' "$f.counts")" \
    "$(jq -r --argjson n "$SEGS" '.by_op | to_entries | map("\(.key) \(.value / $n)") | join(", ")' "$f.counts")"
}

# ================================================================ part 2
if want drain; then
say "part 2: a backlog of .ready WAL (pgbench -i -s $DRAIN_SCALE) drained through archive_command at $DRAIN_DELAY ms"
P2=$T/p2; take_port P2_PORT
pg_init "$P2/c" "$P2_PORT" "" "max_wal_size = 4GB"
pg_start "$P2/c"
pgbench "$P2_PORT" -i -s "$DRAIN_SCALE" -q >/dev/null 2>&1
Q "$P2_PORT" "checkpoint" >/dev/null
LAST=$(Q "$P2_PORT" "select pg_walfile_name(pg_switch_wal())")
READY=$(ls "$P2/c/data/pg_wal/archive_status" | grep -c '\.ready$' || true)
READY_BYTES=$(( READY * 16 * 1024 * 1024 ))
sync
conf=$(repo p2)
delay "$DRAIN_DELAY"; reset_counts
T0=$(us_now)
Q "$P2_PORT" "alter system set archive_command = '$WALGO --config $conf wal-push %p'" >/dev/null
Q "$P2_PORT" "select pg_reload_conf()" >/dev/null
wait_archived "$P2_PORT" "$LAST" 1800 || die "part 2: the backlog was not drained in 30 minutes"
DRAIN_S=$(awk -v a="$T0" -v b="$ARCH_US" 'BEGIN {printf "%.2f", (b - a) / 1e6}')
DRAIN_RATE=$(awk -v n="$READY_BYTES" -v s="$DRAIN_S" 'BEGIN {printf "%.0f", n / 1048576 / s}')
counts >"$P2/counts"
pg_stop "$P2/c"
fi

# ================================================================ part 3
if want replay || want prefetch; then
say "part 3: a base backup + $REPLAY_SEGS segments replayed to promotion"
P3=$T/p3; take_port P3_PORT; mkdir -p "$P3/wal"; chown postgres: "$P3" "$P3/wal"
delay 0
conf3=$(repo p3)
pg_init "$P3/c" "$P3_PORT" "$WALGO --config $conf3 wal-push %p && cp %p $P3/wal/%f"
pg_start "$P3/c"
pgbench "$P3_PORT" -i -s 5 -q >/dev/null 2>&1
as_pg env WALGO_DISK_RATE_LIMIT=0 PGHOST="$T/sock" PGPORT="$P3_PORT" PGUSER=postgres "$WALGO" --config "$conf3" backup-push "$P3/c/data" >"$P3/backup.log" 2>&1 \
  || die "part 3: backup-push failed: $P3/backup.log"
START_SEG=$(Q "$P3_PORT" "select pg_walfile_name(pg_current_wal_lsn())")
while :; do
  cur=$(Q "$P3_PORT" "select pg_walfile_name(pg_current_wal_lsn())")
  (( 16#${cur:16:8} + 256 * 16#${cur:8:8} - 16#${START_SEG:16:8} - 256 * 16#${START_SEG:8:8} >= REPLAY_SEGS )) && break
  # A bulk update of every account (~5 segments) and some pgbench
  # transactions: a busy machine's pgbench alone writes little WAL.
  Q "$P3_PORT" "update pgbench_accounts set abalance = abalance + 1" >/dev/null
  pgbench "$P3_PORT" -n -c 2 -T 2 >/dev/null 2>&1
done
ROWS=$(Q "$P3_PORT" "select count(*) from pgbench_history")
LAST=$(Q "$P3_PORT" "select pg_walfile_name(pg_switch_wal())")
wait_archived "$P3_PORT" "$LAST" 300 || die "part 3: archiving stalled"
pg_stop "$P3/c"
if [[ -n $REPLAY_ALT ]]; then
  cp "$REPLAY_ALT" "$T/bin/walgo-alt" || die "REPLAY_ALT: cannot copy $REPLAY_ALT"
fi
# replay MODE DELAY: restore (untimed, no delay), then time start to
# promotion. MODE cp: the floor; walgo; alt: REPLAY_ALT's binary.
replay() {
  local mode=$1 d=$2 dir=$P3/r port t0 t1 bin=$WALGO
  [[ $mode == alt ]] && bin=$T/bin/walgo-alt
  rm -rf "$dir"; mkdir -p "$dir"; chown postgres: "$dir"
  delay 0
  as_pg "$bin" --config "$conf3" backup-fetch "$dir/data" LATEST >"$P3/fetch.log" 2>&1 || die "part 3: backup-fetch failed: $P3/fetch.log"
  take_port port
  printf "port = %s\narchive_mode = off\nunix_socket_directories = '%s'\n" "$port" "$T/sock" >>"$dir/data/postgresql.auto.conf"
  [[ $mode == cp ]] && echo "restore_command = 'cp $P3/wal/%f %p'" >>"$dir/data/postgresql.auto.conf"
  sync
  delay "$d"; reset_counts
  t0=$(us_now)
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" start >/dev/null
  STARTED+=("$dir/data")
  # Postgres removes recovery.signal as archive recovery ends; only then
  # ask it (the end-of-recovery checkpoint follows). nap (lib.sh) starts
  # no process: a psql every 20 ms took a fifth of both cores.
  while [[ -f $dir/data/recovery.signal ]]; do
    [[ -f $dir/data/postmaster.pid ]] || die "part 3: the restored cluster stopped: $dir/postgres.log"
    nap 0.01
  done
  until [[ $(Q "$port" "select pg_is_in_recovery()" 2>/dev/null) == f ]]; do
    [[ -f $dir/data/postmaster.pid ]] || die "part 3: the restored cluster stopped: $dir/postgres.log"
    nap 0.01
  done
  t1=$(us_now)
  [[ $(Q "$port" "select count(*) from pgbench_history") == "$ROWS" ]] || die "part 3: $mode at $d ms: wrong row count"
  echo "$(( (t1 - t0) / 1000 ))" >>"$P3/$mode.$d.ms"
  [[ $mode != cp ]] && counts >>"$P3/$mode.$d.counts"
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
}
fi
want replay && for r in $(seq 1 "$RUNS"); do
  replay cp 0
  for d in $REPLAY_DELAYS; do
    replay walgo "$d"
    if [[ -n $REPLAY_ALT ]]; then replay alt "$d"; fi
  done
  say "part 3 run $r: floor $(tail -n1 "$P3/cp.0.ms") ms$(for d in $REPLAY_DELAYS; do printf ', %s ms: %s ms' "$d" "$(tail -n1 "$P3/walgo.$d.ms")"; [[ -z $REPLAY_ALT ]] || printf ' (alt %s ms)' "$(tail -n1 "$P3/alt.$d.ms")"; done)"
done

# ================================================================ part 4
if want delete; then
say "part 4: delete retain 1 on a repository of $DELETE_WAL WAL files"
P4=$T/p4; take_port P4_PORT
delay 0
conf4=$(repo p4)
pg_init "$P4/c" "$P4_PORT" "$WALGO --config $conf4 wal-push %p"
# The cluster's WAL starts at log 0x30: the WAL files below it are old.
as_pg "$PGBIN/pg_resetwal" -l 000000010000003000000000 -D "$P4/c/data" >/dev/null
pg_start "$P4/c"
WDIR=$S3/data/bench/p4/wal_005
mkdir -p "$WDIR"
head -c 200 /dev/urandom >"$P4/blob"
for i in $(seq 0 $(( DELETE_WAL - 1 ))); do
  printf -v n '00000001%08X%08X' $(( i / 256 )) $(( i % 256 ))
  cp "$P4/blob" "$WDIR/$n.zst"
done
for _ in 1 2; do
  Q "$P4_PORT" "select pg_switch_wal()" >/dev/null
  as_pg env WALGO_DISK_RATE_LIMIT=0 PGHOST="$T/sock" PGPORT="$P4_PORT" PGUSER=postgres "$WALGO" --config "$conf4" backup-push "$P4/c/data" >>"$P4/backup.log" 2>&1 \
    || die "part 4: backup-push failed: $P4/backup.log"
done
pg_stop "$P4/c"
BEFORE=$(ls "$WDIR" | wc -l)
delay "$DELETE_DELAY"; reset_counts
t0=$(us_now)
as_pg "$WALGO" --config "$conf4" delete retain 1 --confirm >"$P4/delete.log" 2>&1 || die "part 4: delete failed: $P4/delete.log"
DEL_MS=$(( ($(us_now) - t0) / 1000 ))
counts >"$P4/counts"
AFTER=$(ls "$WDIR" | wc -l)
fi
# ================================================================ part 5
# wal-fetch by itself (no prefetch) of segments the archive has and of
# names it lacks, one process each, as restore_command runs it.
if want fetch; then
say "part 5: wal-fetch of $SEGS stored and $SEGS missing segments at $FETCH_DELAY ms"
P5=$T/p5; mkdir -p "$P5/pg_wal"; chown -R postgres: "$P5"
delay 0
conf5=$(repo p5)
for s in "${SEGLIST[@]}"; do
  as_pg env WALGO_UPLOAD_CONCURRENCY=1 "$WALGO" --config "$conf5" wal-push "$P1/wal/$s" 2>/dev/null || die "part 5: wal-push $s failed"
done
delay "$FETCH_DELAY"
: >"$P5/hit.ms"; : >"$P5/hit.counts"; : >"$P5/miss.ms"; : >"$P5/miss.counts"
fetch_one() { # KIND NAME WANT_RC
  local t0 rc=0
  reset_counts; t0=$(us_now)
  as_pg env WALGO_PREFETCH=0 "$WALGO" --config "$conf5" wal-fetch "$2" "$P5/pg_wal/RECOVERYXLOG" 2>>"$P5/fetch.err" || rc=$?
  echo "$(( ($(us_now) - t0) / 1000 ))" >>"$P5/$1.ms"
  (( rc == $3 )) || die "part 5: wal-fetch $2 exited $rc, want $3: $P5/fetch.err"
  counts | jq -c . >>"$P5/$1.counts"
}
for s in "${SEGLIST[@]}"; do fetch_one hit "$s" 0; done
last=${SEGLIST[-1]}
for i in $(seq 1 "$SEGS"); do
  printf -v n '%s%08X' "${last:0:16}" $(( 16#${last:16:8} + 16 + i ))
  fetch_one miss "$n" 1
done
fi

# ================================================================ part 6
# backup-list of LIST_N sentinels (written straight into versitygw's
# folder: valid walgo sentinels, one per segment, no backup behind them).
if want list; then
say "part 6: backup-list of $LIST_N sentinels at $LIST_DELAY ms"
P6=$T/p6; mkdir -p "$P6"
delay 0
conf6=$(repo p6)
BDIR=$S3/data/bench/p6/basebackups_005
mkdir -p "$BDIR"
for i in $(seq 0 $(( LIST_N - 1 ))); do
  log=$(( 1 + i / 256 )) seg=$(( i % 256 ))
  printf -v name 'base_00000001%08X%08X' "$log" "$seg"
  printf -v start '%X/%X' "$log" $(( seg * 16777216 + 40 ))
  printf -v finish '%X/%X' "$log" $(( seg * 16777216 + 4096 ))
  printf -v t '2026-11-%02dT%02d:%02d:00Z' $(( 1 + i / 1440 % 28 )) $(( i / 60 % 24 )) $(( i % 60 ))
  printf '%s\n' "{\"format\": 1, \"name\": \"$name\", \"start_lsn\": \"$start\", \"finish_lsn\": \"$finish\", \"timeline\": 1," \
    " \"start_time\": \"$t\", \"finish_time\": \"$t\", \"pg_version\": 150018, \"system_identifier\": \"7300000000000000001\"," \
    " \"wal_segment_size\": 16777216, \"compression\": \"zstd\"," \
    " \"parts\": [{\"key\": \"basebackups_005/$name/part_001.tar.zst\", \"size\": 1, \"sha256\": \"\"}]," \
    " \"manifest_key\": \"basebackups_005/$name/manifest.json.zst\", \"tablespaces\": [], \"walgo_version\": \"bench\"}" \
    >"$BDIR/${name}_backup_stop_sentinel.json"
done
: >"$P6/ms.0"; : >"$P6/ms.$LIST_DELAY"
for d in 0 "$LIST_DELAY"; do
  delay "$d"
  for r in $(seq 1 "$RUNS"); do
    reset_counts; t0=$(us_now)
    as_pg "$WALGO" --config "$conf6" backup-list --json >"$P6/list.json" 2>"$P6/list.err" || die "part 6: backup-list failed: $P6/list.err"
    echo "$(( ($(us_now) - t0) / 1000 ))" >>"$P6/ms.$d"
    counts >"$P6/counts.$d"
  done
  got=$(jq 'if type == "array" then length else (.backups | length) end' "$P6/list.json")
  (( got == LIST_N )) || die "part 6: backup-list listed $got of $LIST_N: $P6/list.err"
done
fi

# ================================================================ part 7
# The prefetch on a small pg_wal (a tmpfs given to backup-fetch --waldir):
# pg_wal's peak use during the replay of part 3's WAL, with the default
# prefetch and with none, and what is left in pg_wal/walgo/prefetch after
# the promotion.
if want prefetch; then
say "part 7: replay into a $PF_MIB MiB pg_wal at $PF_DELAY ms"
P7=$T/p7; mkdir -p "$P7"; chown postgres: "$P7"
: >"$P7/rows"; PF_FAILS=0
pf_run() { # MODE (default | off)
  local mode=$1 dir=$P7/r wd=$P7/wal port used peak=0 pfpeak=0 pf left t_gone=-1 t0 enospc
  rm -rf "$dir"; mkdir -p "$dir" "$wd"
  mount -t tmpfs -o "size=${PF_MIB}m,mode=0700" tmpfs "$wd" || die "part 7: mount tmpfs"
  MOUNTS+=("$wd")
  chown postgres: "$dir" "$wd"
  delay 0
  as_pg "$WALGO" --config "$conf3" backup-fetch "$dir/data" LATEST --waldir "$wd" >"$P7/fetch.log" 2>&1 || die "part 7: backup-fetch failed: $P7/fetch.log"
  take_port port
  printf "port = %s\narchive_mode = off\nunix_socket_directories = '%s'\n" "$port" "$T/sock" >>"$dir/data/postgresql.auto.conf"
  if [[ $mode == off ]]; then
    sed -i "s|^restore_command = '|restore_command = 'WALGO_PREFETCH=0 |" "$dir/data/postgresql.auto.conf"
    grep -q "^restore_command = 'WALGO_PREFETCH=0 " "$dir/data/postgresql.auto.conf" || die "part 7: no restore_command to turn the prefetch off in"
  fi
  delay "$PF_DELAY"
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$P7/postgres-$mode.log" start >/dev/null
  STARTED+=("$dir/data")
  until [[ $(Q "$port" "select pg_is_in_recovery()" 2>/dev/null) == f ]]; do
    if [[ ! -f $dir/data/postmaster.pid ]]; then
      # A failed recovery is a finding: recorded with its log, the run goes on.
      sleep 1; [[ -f $dir/data/postmaster.pid ]] && continue
      cp "$P7/postgres-$mode.log" "$OUTDIR/s3-$STAMP-p7-$mode-$((++PF_FAILS)).log"
      echo "$mode $(( peak >> 20 )) $(( pfpeak >> 20 )) -2 0 $(grep -c 'No space left' "$P7/postgres-$mode.log" || true)" >>"$P7/rows"
      say "part 7: the restored cluster stopped ($mode): $OUTDIR/s3-$STAMP-p7-$mode-$PF_FAILS.log"
      umount "$wd"; return
    fi
    used=$(df -B1 --output=used "$wd" | tail -n1)
    (( used > peak )) && peak=$used
    pf=$(du -sb "$wd/walgo/prefetch" 2>/dev/null | cut -f1 || true)
    (( ${pf:-0} > pfpeak )) && pfpeak=$pf
    sleep 0.02
  done
  t0=$(us_now)
  for _ in $(seq 1 250); do
    [[ -e $wd/walgo/prefetch ]] || { t_gone=$(( ($(us_now) - t0) / 1000 )); break; }
    sleep 0.02
  done
  left=$(du -sb "$wd/walgo/prefetch" 2>/dev/null | cut -f1 || true)
  [[ $(Q "$port" "select count(*) from pgbench_history") == "$ROWS" ]] || die "part 7: $mode: wrong row count"
  enospc=$(grep -c 'No space left' "$P7/postgres-$mode.log" || true)
  echo "$mode $(( peak >> 20 )) $(( pfpeak >> 20 )) $t_gone ${left:-0} $enospc" >>"$P7/rows"
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
  umount "$wd"
}
for r in $(seq 1 "$RUNS"); do pf_run default; pf_run off; done
fi

# ================================================================ summary
CONDITIONS_END=$(conditions)
{
  echo "walgo on S3 (versitygw $("$VGW" --version 2>/dev/null | head -n1) behind a fixed-delay proxy), $STAMP"
  echo "walgo: $WALGO_FROM; $("$PGBIN/postgres" --version)${WALG:+; wal-g: $("$WALG" --version 2>&1 | head -n1)}"
  echo "conditions at start:"; sed 's/^/  /' <<<"$CONDITIONS_START"
  echo "conditions at end:"; sed 's/^/  /' <<<"$CONDITIONS_END"
  echo
  if want push; then
  echo "1. wal-push of $SEGS real segments, one process each (look-ahead off), a fresh repository per delay"
  printf '   %-6s %6s %10s %10s   %s\n' tool "ms/req" "median ms" "req/seg" "by operation, per segment"
  for d in $DELAYS; do p1_row walgo "$d"; [[ -n $WALG ]] && p1_row walg "$d"; done
  if [[ -n $WALG ]]; then
    last=${DELAYS##* }
    R=$(ratio "$(med <"$P1/walgo.$last.ms")" "$(med <"$P1/walg.$last.ms")")
    echo "   walgo/WAL-G at $last ms: $R   target <= 1.0: $(pass "$R" 1.0 le)"
  else
    echo "   (no WAL-G column: no WALG binary given)"
  fi
  echo
  fi
  if want drain; then
  echo "2. archive throughput: $READY .ready segments ($(( READY_BYTES >> 20 )) MiB) drained through archive_command at $DRAIN_DELAY ms/request"
  echo "   ${DRAIN_S} s, $DRAIN_RATE MiB/s   target >= 250 MiB/s: $(pass "$DRAIN_RATE" 249.999 gt)"
  echo "   requests $(jq -r '.requests' "$P2/counts") ($(jq -r --argjson n "$READY" '.requests / $n | . * 100 | round / 100' "$P2/counts") per segment): $(jq -r '.by_op | to_entries | map("\(.key) \(.value)") | join(", ")' "$P2/counts")"
  echo
  fi
  if want replay; then
  echo "3. replay of a base backup + $REPLAY_SEGS segments to promotion (server start to pg_is_in_recovery() = f), $RUNS runs each, interleaved, medians"
  F=$(med <"$P3/cp.0.ms")
  echo "   floor: restore_command = 'cp LOCAL/%f %p': $F ms [$(paste -sd' ' "$P3/cp.0.ms")]"
  for d in $REPLAY_DELAYS; do
    W=$(med <"$P3/walgo.$d.ms")
    REQ=$(jq -s --argjson n "$REPLAY_SEGS" 'map(.requests) | add / length / $n | . * 100 | round / 100' "$P3/walgo.$d.counts")
    OPS=$(jq -rs --argjson n "$REPLAY_SEGS" 'length as $r | map(.by_op) | reduce .[] as $m ({}; reduce ($m | to_entries[]) as $e (.; .[$e.key] += $e.value)) | to_entries | map("\(.key) \(.value / $r / $n | . * 100 | round / 100)") | join(", ")' "$P3/walgo.$d.counts")
    echo "   walgo wal-fetch at $d ms/request: $W ms [$(paste -sd' ' "$P3/walgo.$d.ms")], $(ratio "$W" "$F")x the floor; $REQ requests per segment ($OPS)"
    # Ratios within each run (the floor and walgo back to back) are less
    # exposed to a machine whose speed drifts between runs.
    echo "   walgo/floor run by run: $(run_ratios "$P3/walgo.$d.ms" "$P3/cp.0.ms")"
    if [[ -n $REPLAY_ALT ]]; then
      A=$(med <"$P3/alt.$d.ms")
      echo "   REPLAY_ALT ($REPLAY_ALT) at $d ms/request: $A ms [$(paste -sd' ' "$P3/alt.$d.ms")], $(ratio "$A" "$F")x the floor, $(ratio "$A" "$W")x walgo"
      echo "   alt/walgo run by run: $(run_ratios "$P3/alt.$d.ms" "$P3/walgo.$d.ms")"
    fi
  done
  last=${REPLAY_DELAYS##* }
  R=$(ratio "$(med <"$P3/walgo.$last.ms")" "$F")
  echo "   at $last ms: ${R}x the floor   target <= 1.15: $(pass "$R" 1.15 le)"
  echo
  fi
  if want delete; then
  echo "4. delete retain 1 --confirm at $DELETE_DELAY ms/request: $BEFORE WAL objects before, $AFTER after, $DEL_MS ms"
  echo "   requests $(jq -r '.requests' "$P4/counts"): $(jq -r '.by_op | to_entries | map("\(.key) \(.value)") | join(", ")' "$P4/counts"); bytes sent $(jq -r '.bytes_in' "$P4/counts"), received $(jq -r '.bytes_out' "$P4/counts")"
  echo
  fi
  if want fetch; then
  echo "5. wal-fetch alone (WALGO_PREFETCH=0), one process each, at $FETCH_DELAY ms/request: $SEGS stored segments, $SEGS missing names"
  for k in hit miss; do
    sum_counts "$P5/$k.counts" >"$P5/$k.sum"
    printf '   %-4s median %s ms, %s requests per call (%s), most in one call %s\n' "$k" "$(med <"$P5/$k.ms")" \
      "$(jq -r --argjson n "$SEGS" '.requests / $n' "$P5/$k.sum")" "$(ops_per "$SEGS" <"$P5/$k.sum")" "$(jq -s 'map(.requests) | max' "$P5/$k.counts")"
  done
  echo "   targets: a stored file 1 request, a missing one 2"
  echo
  fi
  if want list; then
  echo "6. backup-list --json of $LIST_N backups, $RUNS runs each, medians"
  L0=$(med <"$P6/ms.0"); LD=$(med <"$P6/ms.$LIST_DELAY")
  echo "   0 ms/request: $L0 ms [$(paste -sd' ' "$P6/ms.0")]; requests $(jq -r '.requests' "$P6/counts.0")"
  echo "   $LIST_DELAY ms/request: $LD ms [$(paste -sd' ' "$P6/ms.$LIST_DELAY")]; requests $(jq -r '.requests' "$P6/counts.$LIST_DELAY") ($(ops_per 1 <"$P6/counts.$LIST_DELAY"))"
  SEQ=$(( (LIST_N + 1) * LIST_DELAY ))
  echo "   one request after another: $SEQ ms; walgo $(ratio "$LD" "$SEQ")x that, $(ratio "$LD" "$LIST_DELAY") round trips' time"
  echo
  fi
  if want prefetch; then
  echo "7. part 3's backup + WAL replayed into a $PF_MIB MiB tmpfs pg_wal (backup-fetch --waldir) at $PF_DELAY ms/request, $RUNS runs each"
  printf '   %-8s %14s %20s %24s %11s %14s\n' mode "pg_wal peak MiB" "prefetch peak MiB" "folder gone after promo" "left bytes" "'No space left'"
  while read -r m pk pfp gone left ens; do
    printf '   %-8s %14s %20s %24s %11s %14s\n' "$m" "$pk" "$pfp" "$(case $gone in -2) echo "RECOVERY FAILED";; -1) echo "NOT GONE (5 s)";; *) echo "$gone ms";; esac)" "$left" "$ens"
  done <"$P7/rows"
  echo "   (default = WALGO_PREFETCH 8; off = WALGO_PREFETCH=0; the prefetch keeps max(4 segments, 1/16) of pg_wal's file system free)"
  fi
} | tee "$OUT"
say "summary written to $OUT"
