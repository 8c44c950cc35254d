#!/usr/bin/env bash
# bench/backup.sh: walgo backup-push / backup-fetch against their baselines
# and pgBackRest, on one pgbench data directory (>= 1 GiB), in one run.
#
#   1. backup-push, disk rate limit off, vs tar | zstd -1 -T0 (and pgBackRest
#      backup --type=full): wall time, compressed size, CPU, peak RSS;
#      RUNS runs each, interleaved, page cache dropped before every run
#   2. backup-push at the default 10 MB/s under pgbench -c 4: the measured
#      read rate, and the tps pgbench keeps while it runs (pgBackRest, which
#      has no rate limit, in the same way)
#   3. backup-fetch vs zstd -d | tar -x (and pgBackRest restore) into empty
#      directories, RUNS runs each, interleaved, page cache dropped
#   4. the ratios walgo/pgBackRest of all of the above
#
# Run as root on Debian (Postgres and every tool run as the `postgres` user):
#   bash bench/backup.sh
# Settings (environment): see bench/README.md. The summary is printed and
# written to bench/out/backup-<date>.txt.
set -Eeuo pipefail
export LC_ALL=C

# ---------------------------------------------------------------- settings
SCALE=${SCALE:-75}                # pgbench -i scale: ~15.3 MiB per unit, 75 = 1.12 GiB
RUNS=${RUNS:-5}                   # runs per tool in parts 1 and 3 (medians)
CONC=${CONC:-4}                   # WALGO_UPLOAD/DOWNLOAD_CONCURRENCY and pgBackRest process-max
RATE=${RATE:-10MB}                # part 2: walgo's disk rate limit (its default)
LOAD_S=${LOAD_S:-60}              # part 2: pgbench -T seconds per run
LOAD_CLIENTS=${LOAD_CLIENTS:-4}   # part 2: pgbench -c (-j 2)
LOAD_DELAY_S=${LOAD_DELAY_S:-5}   # part 2: the backup starts this long after pgbench
DROP_CACHES=${DROP_CACHES:-auto}  # auto: drop the page cache before each run if we can; 0: keep everything warm
VERIFY=${VERIFY:-1}               # start Postgres on walgo's and pgBackRest's last restore and count rows
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT_BASE=${PORT_BASE:-55432}
BENCH_TMP=${BENCH_TMP:-/var/tmp}  # on disk, not tmpfs
KEEP_TMP=${KEEP_TMP:-0}

(( RUNS >= 1 && SCALE >= 1 && LOAD_S > LOAD_DELAY_S )) || { echo "need RUNS >= 1, SCALE >= 1, LOAD_S > LOAD_DELAY_S" >&2; exit 2; }
SELF=$(readlink -f "$0")
source "$(dirname "$SELF")/lib.sh"
bench_init backup
bench_install pgbackrest jq
bench_tmpdir
build_walgo
chown -R postgres: "$T"
CONDITIONS_START=$(conditions)
VERSIONS=$(versions)
say "$VERSIONS"
say "temp dir $T"

# ---------------------------------------------------------------- cache state
# Every timed run starts cold: dirty pages written back (sync), then the page
# cache dropped, so each tool reads its input from disk. Where that is not
# allowed (no root over /proc/sys/vm), every input is read once before each
# run instead, so all tools start warm.
if [[ $DROP_CACHES == auto ]]; then
  if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then DROP_CACHES=1; else DROP_CACHES=0; fi
fi
if [[ $DROP_CACHES == 1 ]]; then CACHE_NOTE="cold: sync + echo 3 > /proc/sys/vm/drop_caches before every timed run"
else CACHE_NOTE="warm: sync, then every input read once (cat > /dev/null) before every timed run"; fi
prepare_cache() { # DIR...: the inputs of the next run (warm mode reads them)
  sync
  if [[ $DROP_CACHES == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches
  else find "$@" -type f -exec cat {} + >/dev/null 2>&1 || true; fi
}

# ---------------------------------------------------------------- the cluster
# One cluster; its archive_command pushes every segment to both repositories,
# walgo's first: backup-push checks that its backup's WAL is in the walgo
# repository, pgBackRest's backup waits for it in its own (archive-check).
C=$T/pg
P=$(next_port)
DATA=$C/data
WREPO=$T/walgo-repo
WCONF=$T/walgo.conf
PGBR_CONF=$T/pgbackrest.conf
mkdir -p "$WREPO" "$T"/{pgbr-repo,pgbr-log,pgbr-lock,out,rst,p2}
printf 'WALGO_STORAGE=file://%s\n' "$WREPO" >"$WCONF"
chown -R postgres: "$WREPO"; walgo_init "file://$WREPO"
cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$T/pgbr-repo
repo1-retention-full=99
log-path=$T/pgbr-log
lock-path=$T/pgbr-lock
compress-type=zst
compress-level=1
process-max=$CONC
start-fast=y
log-level-console=warn

[bench]
pg1-path=$DATA
pg1-port=$P
pg1-socket-path=$T/sock
EOF
chown -R postgres: "$T"
ARCHIVE_CMD="$WALGO --config $WCONF wal-push %p && pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p"
say "cluster on 127.0.0.1:$P, pgbench -i -s $SCALE; archive_command = '$ARCHIVE_CMD'"
pg_init "$C" "$P" "$ARCHIVE_CMD" "log_checkpoints = on"
pg_start "$C"
as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench stanza-create >"$C/stanza-create.log" 2>&1 || die "stanza-create failed: $C/stanza-create.log"
t0=$(us_now)
pgbench "$P" -i -q -s "$SCALE" >"$C/pgbench-init.log" 2>&1 || die "pgbench -i failed: $C/pgbench-init.log"
INIT_S=$(awk -v a="$t0" -v b="$(us_now)" 'BEGIN {printf "%.0f", (b - a) / 1e6}')
Q "$P" checkpoint
last=$(Q "$P" "select pg_walfile_name(pg_switch_wal())")
wait_archived "$P" "$last" 300 || die "archiving stalled after pgbench -i: $C/postgres.log"
# What a base backup holds: the data directory without pg_wal's contents.
DATA_BYTES=$(( $(du -sb "$DATA" | cut -f1) - $(du -sb "$DATA/pg_wal" | cut -f1) ))
TAR_BYTES=$(as_pg tar -cf - -C "$DATA" --exclude='./pg_wal/*' . | wc -c || true)
DB_MIB=$(Q "$P" "select pg_database_size('postgres') / 1048576")
say "data directory: $(awk -v b="$DATA_BYTES" 'BEGIN {printf "%.2f GiB", b / 2^30}') without pg_wal (database $DB_MIB MiB; pgbench -i took ${INIT_S}s)"
(( DATA_BYTES >= 1 << 30 )) || say "note: under 1 GiB (raise SCALE)"

# ---------------------------------------------------------------- timing helpers
WENV=(env WALGO_STORAGE="file://$WREPO" PGHOST="$T/sock" PGPORT="$P" PGUSER=postgres PGDATABASE=postgres)
RES=$T/res
mkdir -p "$RES"
# timed KIND CMD...: runs CMD as postgres under /usr/bin/time -v, appends
# "wall_ms rss_MiB cpu_ms" to $RES/KIND$SFX. Wall time from $EPOCHREALTIME (µs).
# SFX is ".warm" in the warm-up rounds, which the summary leaves out.
SFX=
timed() {
  local kind=$1 t0 t1 rc=0 tv=$T/time.$1
  shift
  cut -d' ' -f1 /proc/loadavg >>"$RES/load_${kind%%_*}$SFX"   # the machine's load as the run starts
  t0=$(us_now)
  as_pg /usr/bin/time -v -o "$tv" "$@" || rc=$?
  t1=$(us_now)
  LAST_T0=$t0 LAST_T1=$t1
  (( rc == 0 )) || { say "$kind failed (exit $rc)"; return "$rc"; }
  awk -F': ' -v w=$(( t1 - t0 )) '/Maximum resident set size/ {r = $2 / 1024}
    /User time/ {c += $2} /System time/ {c += $2}
    END {printf "%.1f %.1f %.0f\n", w / 1000, r, c * 1000}' "$tv" >>"$RES/$kind$SFX"
}
col() { cut -d' ' -f"$2" "$RES/$1"; }                         # KIND FIELD
med() { col "$1" "$2" | stats | cut -d' ' -f1; }              # median
all() { col "$1" "$2" | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1}'; }  # every run
mx() { col "$1" "$2" | sort -g | tail -n 1; }                 # maximum
sec() { awk -v v="$1" 'BEGIN {printf "%.2f", v / 1000}'; }   # ms -> s
mib() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1048576}'; }
# logfield LOG FIELD: FIELD of walgo's "backup finished" line in LOG
logfield() { grep -P '\tbackup finished\t' "$1" | tail -n 1 | grep -o "\"$2\": \"\\?[^,}\"]*" | sed 's/.*: "\?//'; }
# walgo_phases LOG T0 T1 (µs): where a backup-push's wall time went, in ms,
# from its debug log: "start" = exec, connect, checkpoint (to "backup
# started"); "data" = read, tar, compress, store (to the last "partition
# stored"); "stop" = pg_backup_stop(wait_for_archive => true), i.e. until
# Postgres sees the last segment archived (to walgo's next log line, its own
# lookup of that segment); "end" = that lookup, manifest, sentinel, exit.
walgo_phases() {
  local log=$1 t0=$2 t1=$3 a b c
  a=$(grep -P '\tbackup started\t' "$log" | cut -f1)
  b=$(grep -P '\tpartition stored\t' "$log" | tail -n 1 | cut -f1)
  c=$(awk -F'\t' '$4 == "partition stored" {n = NR} n && NR == n + 1 {print $1}' "$log" | tail -n 1)
  [[ -n $a && -n $b && -n $c ]] || { echo "nan nan nan nan"; return; }
  a=$(date -d "$a" +%s%6N) b=$(date -d "$b" +%s%6N) c=$(date -d "$c" +%s%6N)
  echo "$(( (a - t0) / 1000 )) $(( (b - a) / 1000 )) $(( (c - b) / 1000 )) $(( (t1 - c) / 1000 ))"
}
pgbr_info() { as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench --output=json info | jq -r "$1"; }

# ================================================================ part 1
# tar baseline: the data directory without pg_wal's contents, which neither
# walgo nor pgBackRest copies (with it, tar would compress up to max_wal_size
# more). tar exits 1 when a file changed while read: a live cluster.
TARZ=$T/out/base.tar.zst
: >"$RES/push_sizes"
say "part 1: backup-push (limit off) vs tar | zstd -1 -T0 vs pgBackRest, $RUNS runs each, interleaved; $CACHE_NOTE"
# Round 0 is a warm-up, not counted: the first run after the setup (and
# its writes and frees) was found slow whatever the tool.
tools=(walgo tar pgbr)
for r in $(seq 0 "$RUNS"); do
  SFX=; (( r > 0 )) || SFX=.warm
  for k in 0 1 2; do
    tool=${tools[(r + 2 + k) % 3]}
    case $tool in
      walgo)
        prepare_cache "$DATA"
        timed push_walgo "${WENV[@]}" WALGO_DISK_RATE_LIMIT=0 WALGO_UPLOAD_CONCURRENCY="$CONC" WALGO_LOG_LEVEL=debug \
          "$WALGO" backup-push "$DATA" 2>"$T/push_walgo.$r.log" || die "walgo backup-push failed: $T/push_walgo.$r.log"
        walgo_phases "$T/push_walgo.$r.log" "$LAST_T0" "$LAST_T1" >>"$RES/push_phases$SFX"
        echo "walgo $(logfield "$T/push_walgo.$r.log" bytes) $(logfield "$T/push_walgo.$r.log" stored_bytes)" >>"$RES/push_sizes" ;;
      tar)
        rm -f "$TARZ"
        prepare_cache "$DATA"
        timed push_tar bash -c 'tar -cf - -C "$1" --exclude="./pg_wal/*" . | zstd -1 -T0 -q >"$2"
          r=("${PIPESTATUS[@]}"); (( r[0] <= 1 && r[1] == 0 ))' _ "$DATA" "$TARZ" || die "tar | zstd failed"
        # The same file made durable, as walgo's and pgBackRest's are.
        t0=$(us_now); as_pg sync "$TARZ"; echo "$(( ($(us_now) - t0) / 1000 ))" >>"$RES/push_tar_fsync$SFX"
        echo "tar $TAR_BYTES $(stat -c %s "$TARZ")" >>"$RES/push_sizes" ;;
      pgbr)
        prepare_cache "$DATA"
        timed push_pgbr pgbackrest --config="$PGBR_CONF" --stanza=bench --type=full backup >"$T/push_pgbr.$r.log" 2>&1 \
          || die "pgbackrest backup failed: $T/push_pgbr.$r.log and $T/pgbr-log"
        echo "pgbr $(pgbr_info '.[0].backup[-1].info.size') $(pgbr_info '.[0].backup[-1].info.repository.delta')" >>"$RES/push_sizes" ;;
    esac
    say "part 1 run $r${SFX:+ (warm-up)}: $tool $(tail -n 1 "$RES/push_$tool$SFX" | awk '{printf "%.2fs, RSS %.0f MiB, CPU %.1fs", $1 / 1000, $2, $3 / 1000}')"
  done
done
sizes() { awk -v t="$1" -v f="$2" '$1 == t {print $f}' "$RES/push_sizes" | stats | cut -d' ' -f1; }
SFX=

# ================================================================ part 3
# Into fresh empty directories (made, as postgres, before the clock starts).
# walgo fsyncs every file and folder it restores and pgBackRest syncs its
# files too; the tar baseline does not, so the time an fsync of everything
# it wrote takes afterwards (sync on every file and folder) is shown apart.
say "part 3: backup-fetch vs zstd -d | tar -x vs pgBackRest restore, $RUNS runs each, interleaved; $CACHE_NOTE"
: >"$RES/fetch_bytes"
for r in $(seq 0 "$RUNS"); do   # round 0: warm-up, as in part 1
  SFX=; (( r > 0 )) || SFX=.warm
  for k in 0 1 2; do
    tool=${tools[(r + 2 + k) % 3]}
    dst=$T/rst/$tool
    rm -rf "$dst"; as_pg mkdir -m 700 "$dst"
    case $tool in
      walgo)
        prepare_cache "$WREPO"
        timed fetch_walgo env WALGO_STORAGE="file://$WREPO" WALGO_DOWNLOAD_CONCURRENCY="$CONC" \
          "$WALGO" backup-fetch "$dst" LATEST >"$T/fetch_walgo.$r.log" 2>&1 || die "walgo backup-fetch failed: $T/fetch_walgo.$r.log" ;;
      tar)
        prepare_cache "$TARZ"
        timed fetch_tar bash -c 'zstd -d -q -c "$1" | tar -xf - -C "$2"' _ "$TARZ" "$dst" || die "zstd -d | tar -x failed"
        t0=$(us_now); as_pg find "$dst" -exec sync {} +; echo "$(( ($(us_now) - t0) / 1000 ))" >>"$RES/fetch_tar_fsync$SFX" ;;
      pgbr)
        prepare_cache "$T/pgbr-repo"
        timed fetch_pgbr pgbackrest --config="$PGBR_CONF" --stanza=bench --pg1-path="$dst" restore >"$T/fetch_pgbr.$r.log" 2>&1 \
          || die "pgbackrest restore failed: $T/fetch_pgbr.$r.log and $T/pgbr-log" ;;
    esac
    echo "$tool $(du -sb "$dst" | cut -f1)" >>"$RES/fetch_bytes"
    say "part 3 run $r${SFX:+ (warm-up)}: $tool $(tail -n 1 "$RES/fetch_$tool$SFX" | awk '{printf "%.2fs, RSS %.0f MiB, CPU %.1fs", $1 / 1000, $2, $3 / 1000}')"
  done
done
fetched() { awk -v t="$1" '$1 == t {print $2}' "$RES/fetch_bytes" | tail -n 1; }
SFX=

# ---------------------------------------------------------------- verify
# walgo's and pgBackRest's last restores are started (archive_mode off, a
# port of their own): each recovers through its own restore_command from its
# own repository, promotes, and must hold all pgbench_accounts rows.
VERIFIED="not run (VERIFY=0)"
verify() { # TOOL
  local dir=$T/rst/$1 port log=$T/verify-$1.log n
  port=$(next_port)
  printf "port = %s\narchive_mode = off\n" "$port" >>"$dir/postgresql.auto.conf"
  as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$log" -w -t 300 start >/dev/null || { echo "$1: start failed ($log)"; return; }
  STARTED+=("$dir")
  for _ in $(seq 1 600); do
    [[ $(Q "$port" "select pg_is_in_recovery()" 2>/dev/null) == f ]] && break
    sleep 0.5
  done
  n=$(Q "$port" "select count(*) from pgbench_accounts" 2>&1) || n="query failed: $n"
  as_pg "$PGBIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
  if [[ $n == $(( SCALE * 100000 )) ]]; then echo "$1 ok ($n rows)"; else echo "$1 FAILED ($n; want $(( SCALE * 100000 )), see $log)"; fi
}
if [[ $VERIFY == 1 ]]; then
  say "verify: starting Postgres on walgo's and pgBackRest's last restores"
  VERIFIED="$(verify walgo), $(verify pgbr)"
  say "verify: $VERIFIED"
fi
rm -rf "$T/rst"/*

# ================================================================ part 2
# pgbench -c LOAD_CLIENTS -j 2 -T LOAD_S -P 1 (per-second tps, with
# timestamps) four times, each after a CHECKPOINT: alone, with walgo
# backup-push at RATE starting LOAD_DELAY_S in, with pgBackRest's backup
# starting LOAD_DELAY_S in, alone again. "tps during" averages the per-second
# tps over the seconds the backup ran (while pgbench ran); the baseline is
# the same seconds of the two runs alone, averaged.
P2=$T/p2
load_run() { # NAME [backup...]: sets LOAD_T0 (µs), B0, B1 (µs)
  local name=$1 pb
  shift
  Q "$P" checkpoint
  LOAD_T0=$(us_now)
  pgbench "$P" -c "$LOAD_CLIENTS" -j 2 -T "$LOAD_S" -P 1 --progress-timestamp >"$P2/$name.pgbench" 2>&1 &
  pb=$!; BG_PIDS+=("$pb")
  B0=0 B1=0
  if (( $# )); then
    sleep "$LOAD_DELAY_S"
    B0=$(us_now)
    "$@" || die "part 2: $name backup failed (see $P2)"
    B1=$(us_now)
  fi
  wait "$pb" || die "part 2: pgbench failed: $P2/$name.pgbench"
  LOAD_T1=$(us_now)
}
# wtps FILE FROM_S TO_S: mean tps of the progress lines that end in (FROM, TO], epoch seconds
wtps() {
  awk -v a="$2" -v b="$3" '/^progress: [0-9.]+ s, / {t = $2 + 0; if (t > a + 0.5 && t <= b + 0.5) {s += $4; n++}}
    END {if (n) printf "%.1f %d\n", s / n, n; else print "nan 0"}' "$1"
}
alltps() { grep -o 'tps = [0-9.]*' "$1" | head -n 1 | awk '{printf "%.1f", $3}'; }
say "part 2: pgbench -c $LOAD_CLIENTS -T $LOAD_S alone, with walgo backup-push at $RATE, with pgBackRest backup, alone again"
load_run base1
BASE1_T0=$LOAD_T0
say "part 2: alone: $(alltps "$P2/base1.pgbench") tps"
walgo_rated() {
  timed rated_walgo "${WENV[@]}" WALGO_DISK_RATE_LIMIT="$RATE" WALGO_UPLOAD_CONCURRENCY="$CONC" \
    "$WALGO" backup-push "$DATA" 2>"$P2/walgo.log"
}
load_run walgo walgo_rated
W_T0=$LOAD_T0 W_B0=$B0 W_B1=$B1 W_T1=$LOAD_T1
say "part 2: walgo backup took $(awk -v a="$B0" -v b="$B1" 'BEGIN {printf "%.1f", (b - a) / 1e6}')s"
pgbr_loaded() {
  timed rated_pgbr pgbackrest --config="$PGBR_CONF" --stanza=bench --type=full backup >"$P2/pgbr.log" 2>&1
}
load_run pgbr pgbr_loaded
R_T0=$LOAD_T0 R_B0=$B0 R_B1=$B1 R_T1=$LOAD_T1
say "part 2: pgBackRest backup took $(awk -v a="$B0" -v b="$B1" 'BEGIN {printf "%.1f", (b - a) / 1e6}')s"
load_run base2
BASE2_T0=$LOAD_T0

# window RUN_T0 B0 B1 RUN_T1: offsets (s) of the backup's window inside its pgbench run
window() { awk -v t0="$1" -v b0="$2" -v b1="$3" -v t1="$4" 'BEGIN {e = (b1 < t1 ? b1 : t1); printf "%.3f %.3f\n", (b0 - t0) / 1e6, (e - t0) / 1e6}'; }
read -r W_O0 W_O1 < <(window "$W_T0" "$W_B0" "$W_B1" "$W_T1")
read -r R_O0 R_O1 < <(window "$R_T0" "$R_B0" "$R_B1" "$R_T1")
abs_w() { awk -v t0="$1" -v o="$2" 'BEGIN {printf "%.3f", t0 / 1e6 + o}'; }
read -r W_TPS W_N < <(wtps "$P2/walgo.pgbench" "$(abs_w "$W_T0" "$W_O0")" "$(abs_w "$W_T0" "$W_O1")")
read -r R_TPS R_N < <(wtps "$P2/pgbr.pgbench" "$(abs_w "$R_T0" "$R_O0")" "$(abs_w "$R_T0" "$R_O1")")
base_tps() { # O0 O1: the same seconds of both runs alone, averaged
  local a b
  read -r a _ < <(wtps "$P2/base1.pgbench" "$(abs_w "$BASE1_T0" "$1")" "$(abs_w "$BASE1_T0" "$2")")
  read -r b _ < <(wtps "$P2/base2.pgbench" "$(abs_w "$BASE2_T0" "$1")" "$(abs_w "$BASE2_T0" "$2")")
  awk -v a="$a" -v b="$b" 'BEGIN {printf "%.1f", (a + b) / 2}'
}
W_BASE=$(base_tps "$W_O0" "$W_O1")
R_BASE=$(base_tps "$R_O0" "$R_O1")
drop() { awk -v d="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f", (1 - d / b) * 100; else print "nan"}'; }
# walgo's read rate: bytes read (its "backup finished" line) / wall time of
# the command; and the steady rate between its first and last progress lines
# (a backup shorter than one progress interval has none: no grep failure).
RATE_BYTES=$(logfield "$P2/walgo.log" bytes)
RATE_WALL_S=$(awk -v a="$W_B0" -v b="$W_B1" 'BEGIN {printf "%.2f", (b - a) / 1e6}')
RATE_MEAS=$(awk -v n="$RATE_BYTES" -v s="$RATE_WALL_S" 'BEGIN {printf "%.0f", n / s}')
RATE_TOOK=$(logfield "$P2/walgo.log" took)
RATE_STEADY=$({ grep -P '\tprogress\t' "$P2/walgo.log" || true; } | awk -F'\t' '{print $1, $NF}' | while read -r ts rest; do
    echo "$(date -d "$ts" +%s.%N) $(grep -o '"bytes": [0-9]*' <<<"$rest" | cut -d' ' -f2)"
  done | awk 'NR == 1 {t0 = $1; b0 = $2} {t1 = $1; b1 = $2} END {if (NR > 1 && t1 > t0) printf "%.0f", (b1 - b0) / (t1 - t0); else print "nan"}')
RATE_NOMINAL=$(awk -v s="$RATE" 'BEGIN {n = s + 0; u = tolower(s); sub(/^[0-9.]+ */, "", u)
  m["mb"] = 1e6; m["m"] = 1e6; m["kb"] = 1e3; m["k"] = 1e3; m["gb"] = 1e9; m["mib"] = 2^20; m["kib"] = 2^10; m["gib"] = 2^30; m[""] = 1; m["b"] = 1
  printf "%.0f", n * m[u]}')
RATE_DEV=$(awk -v r="$RATE_MEAS" -v n="$RATE_NOMINAL" 'BEGIN {printf "%+.1f", (r / n - 1) * 100}')
RATE_DEV_STEADY=$(awk -v r="$RATE_STEADY" -v n="$RATE_NOMINAL" 'BEGIN {if (r == "nan") print "nan"; else printf "%+.1f", (r / n - 1) * 100}')
RATE_OK=$(awk -v d="$RATE_DEV" 'BEGIN {print (d <= 5 && d >= -5) ? "met" : "MISSED"}')
PGBR_LOAD_S=$(awk -v a="$R_B0" -v b="$R_B1" 'BEGIN {printf "%.2f", (b - a) / 1e6}')
PGBR_LOAD_BYTES=$(pgbr_info '.[0].backup[-1].info.size')
PGBR_LOAD_RATE=$(awk -v n="$PGBR_LOAD_BYTES" -v s="$PGBR_LOAD_S" 'BEGIN {printf "%.0f", n / s}')

# ================================================================ summary
CONDITIONS_END=$(conditions)
row() { printf '   %-50s %7s %7s %7s  %-34s %10s %6s %8s\n' "$@"; }
{
  echo "walgo backup benchmark, $STAMP"
  echo "$VERSIONS"
  echo "conditions at start:"; sed 's/^/  /' <<<"$CONDITIONS_START"
  echo "conditions at end:";   sed 's/^/  /' <<<"$CONDITIONS_END"
  echo "data: pgbench -i -s $SCALE (${INIT_S}s, archiving to both repositories), $(awk -v b="$DATA_BYTES" 'BEGIN {printf "%.2f GiB", b / 2^30}') without pg_wal ($DATA_BYTES bytes), cluster idle in parts 1 and 3"
  echo "archive_command = 'walgo --config F wal-push %p && pgbackrest --config=F --stanza=bench archive-push %p'"
  echo "concurrency $CONC: WALGO_UPLOAD_CONCURRENCY, WALGO_DOWNLOAD_CONCURRENCY and pgBackRest process-max; zstd level 1 everywhere"
  echo "page cache: $CACHE_NOTE"
  echo "load average (1 min) as each timed run of parts 1 and 3 started: median $(cat "$RES/load_push" "$RES/load_fetch" | stats | cut -d' ' -f1), max $(cat "$RES/load_push" "$RES/load_fetch" | sort -g | tail -n 1) (this script adds up to about 2; more is other work on the machine)"
  echo
  echo "1. base backup, walgo's disk rate limit off (WALGO_DISK_RATE_LIMIT=0); $RUNS runs per tool after a warm-up round, interleaved, medians, [every run]"
  echo "   wall = the command's wall time; CPU = user+sys of it and its children; RSS = the largest single process (time -v)"
  row tool "wall s" "CPU s" "RSS MiB" "wall ms, every run" "stored MiB" "ratio" "read GiB"
  row "walgo backup-push" "$(sec "$(med push_walgo 1)")" "$(sec "$(med push_walgo 3)")" "$(mx push_walgo 2)" "[$(all push_walgo 1)]" \
    "$(mib "$(sizes walgo 3)")" "$(ratio "$(sizes walgo 2)" "$(sizes walgo 3)")" "$(awk -v b="$(sizes walgo 2)" 'BEGIN {printf "%.2f", b / 2^30}')"
  row "tar -c (no pg_wal/*) | zstd -1 -T0 > FILE" "$(sec "$(med push_tar 1)")" "$(sec "$(med push_tar 3)")" "$(mx push_tar 2)" "[$(all push_tar 1)]" \
    "$(mib "$(sizes tar 3)")" "$(ratio "$(sizes tar 2)" "$(sizes tar 3)")" "$(awk -v b="$(sizes tar 2)" 'BEGIN {printf "%.2f", b / 2^30}')"
  row "pgbackrest backup --type=full (process-max $CONC)" "$(sec "$(med push_pgbr 1)")" "$(sec "$(med push_pgbr 3)")" "$(mx push_pgbr 2)" "[$(all push_pgbr 1)]" \
    "$(mib "$(sizes pgbr 3)")" "$(ratio "$(sizes pgbr 2)" "$(sizes pgbr 3)")" "$(awk -v b="$(sizes pgbr 2)" 'BEGIN {printf "%.2f", b / 2^30}')"
  echo "   (tar's FILE made durable afterwards, sync FILE: median $(col push_tar_fsync 1 | stats | cut -d' ' -f1) ms more)"
  PUSH_RATIO=$(ratio "$(med push_walgo 1)" "$(med push_tar 1)")
  echo "   walgo/tar time ${PUSH_RATIO}   target <= 1.10: $(pass "$PUSH_RATIO" 1.10 le);   walgo/tar CPU $(ratio "$(med push_walgo 3)" "$(med push_tar 3)")"
  echo "   walgo's wall time by phase (medians, ms, from its debug log): start $(med push_phases 1), data $(med push_phases 2),"
  echo "   pg_backup_stop(wait_for_archive => true) $(med push_phases 3), end $(med push_phases 4); walgo's data phase/tar $(ratio "$(med push_phases 2)" "$(med push_tar 1)")"
  echo "   walgo/tar stored size $(ratio "$(sizes walgo 3)" "$(sizes tar 3)")"
  echo "   walgo peak RSS $(mx push_walgo 2) MiB   target <= 256 MiB: $(pass "$(mx push_walgo 2)" 256 le)"
  echo
  echo "2. walgo backup-push at WALGO_DISK_RATE_LIMIT=$RATE ($RATE_NOMINAL bytes/s) while pgbench -c $LOAD_CLIENTS -j 2 -T $LOAD_S runs"
  echo "   (the same $(awk -v b="$DATA_BYTES" 'BEGIN {printf "%.2f GiB", b / 2^30}') data directory; the backup starts ${LOAD_DELAY_S}s after pgbench)"
  echo "   bytes read $RATE_BYTES in ${RATE_WALL_S}s wall (walgo's took: $RATE_TOOK)"
  echo "   read rate = bytes / wall: $RATE_MEAS bytes/s (${RATE_DEV}%)   target within +-5%: $RATE_OK"
  echo "   steady rate between its first and last progress lines: $RATE_STEADY bytes/s (${RATE_DEV_STEADY}%)"
  echo "   pgbench tps, mean of the per-second tps over the seconds the backup ran (baseline: the same seconds of the"
  echo "   two runs without a backup, before and after, averaged); whole runs: alone $(alltps "$P2/base1.pgbench") and $(alltps "$P2/base2.pgbench"),"
  echo "   with walgo $(alltps "$P2/walgo.pgbench"), with pgBackRest $(alltps "$P2/pgbr.pgbench"); the two runs alone differ by $(awk -v a="$(alltps "$P2/base1.pgbench")" -v b="$(alltps "$P2/base2.pgbench")" 'BEGIN {d = (a - b) / ((a + b) / 2) * 100; printf "%.1f", d < 0 ? -d : d}')%:"
  echo "   a tps drop smaller than that is within this machine's noise"
  printf '   %-50s %9s %8s %10s %10s %8s\n' "backup" "backup s" "seconds" "tps alone" "tps with" "tps drop"
  printf '   %-50s %9s %8s %10s %10s %7s%%\n' "walgo backup-push at $RATE" "$RATE_WALL_S" "$W_N" "$W_BASE" "$W_TPS" "$(drop "$W_TPS" "$W_BASE")"
  printf '   %-50s %9s %8s %10s %10s %7s%%\n' "pgbackrest backup (no rate limit; process-max $CONC)" "$PGBR_LOAD_S" "$R_N" "$R_BASE" "$R_TPS" "$(drop "$R_TPS" "$R_BASE")"
  echo "   pgBackRest read $PGBR_LOAD_BYTES bytes at $PGBR_LOAD_RATE bytes/s (it has no rate limit; its maintainers suggest process-max)"
  echo
  echo "3. restore into an empty directory; $RUNS runs per tool after a warm-up round, interleaved, medians, [every run]"
  row tool "wall s" "CPU s" "RSS MiB" "wall ms, every run" "GiB out" "" ""
  row "walgo backup-fetch DIR LATEST" "$(sec "$(med fetch_walgo 1)")" "$(sec "$(med fetch_walgo 3)")" "$(mx fetch_walgo 2)" "[$(all fetch_walgo 1)]" \
    "$(awk -v b="$(fetched walgo)" 'BEGIN {printf "%.2f", b / 2^30}')" "" ""
  row "zstd -d -c FILE | tar -xf - -C DIR" "$(sec "$(med fetch_tar 1)")" "$(sec "$(med fetch_tar 3)")" "$(mx fetch_tar 2)" "[$(all fetch_tar 1)]" \
    "$(awk -v b="$(fetched tar)" 'BEGIN {printf "%.2f", b / 2^30}')" "" ""
  row "pgbackrest restore --pg1-path=DIR" "$(sec "$(med fetch_pgbr 1)")" "$(sec "$(med fetch_pgbr 3)")" "$(mx fetch_pgbr 2)" "[$(all fetch_pgbr 1)]" \
    "$(awk -v b="$(fetched pgbr)" 'BEGIN {printf "%.2f", b / 2^30}')" "" ""
  FSYNC_MS=$(col fetch_tar_fsync 1 | stats | cut -d' ' -f1)
  echo "   (walgo and pgBackRest fsync what they write; tar does not: an fsync of every file and folder it wrote took"
  echo "   median $FSYNC_MS ms more, so tar + fsync = $(sec "$(awk -v a="$(med fetch_tar 1)" -v b="$FSYNC_MS" 'BEGIN {print a + b}')") s)"
  FETCH_RATIO=$(ratio "$(med fetch_walgo 1)" "$(med fetch_tar 1)")
  echo "   walgo/tar time ${FETCH_RATIO}   target <= 1.10: $(pass "$FETCH_RATIO" 1.10 le);   walgo/(tar + fsync) $(ratio "$(med fetch_walgo 1)" "$(awk -v a="$(med fetch_tar 1)" -v b="$FSYNC_MS" 'BEGIN {print a + b}')")"
  echo "   restored and started (VERIFY): $VERIFIED"
  echo
  echo "4. walgo/pgBackRest (below 1: walgo faster or smaller; the tps share: above 1, walgo costs pgbench less)"
  echo "   backup (limit off): time $(ratio "$(med push_walgo 1)" "$(med push_pgbr 1)"), stored size $(ratio "$(sizes walgo 3)" "$(sizes pgbr 3)"), CPU $(ratio "$(med push_walgo 3)" "$(med push_pgbr 3)"), peak RSS $(ratio "$(mx push_walgo 2)" "$(mx push_pgbr 2)") (pgBackRest: largest of its $((CONC + 1)) processes)"
  echo "   under pgbench: share of its tps pgbench keeps during the backup $(awk -v a="$W_TPS" -v b="$W_BASE" -v c="$R_TPS" -v d="$R_BASE" 'BEGIN {if (b > 0 && c > 0 && d > 0) printf "%.2f", (a / b) / (c / d); else print "nan"}') (walgo at $RATE for ${RATE_WALL_S}s, pgBackRest unlimited for ${PGBR_LOAD_S}s)"
  echo "   restore: time $(ratio "$(med fetch_walgo 1)" "$(med fetch_pgbr 1)"), CPU $(ratio "$(med fetch_walgo 3)" "$(med fetch_pgbr 3)"), peak RSS $(ratio "$(mx fetch_walgo 2)" "$(mx fetch_pgbr 2)")"
} | tee "$OUT"
say "summary written to $OUT"
