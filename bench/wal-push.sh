#!/usr/bin/env bash
# bench/wal-push.sh: walgo wal-push against its baselines, in one run.
#
#   1. single-segment critical path: one process per real 16 MiB pgbench WAL
#      segment, exec included, interleaved per segment: walgo wal-push
#      (look-ahead off), zstd -1 (no fsync), zstd -1 + fsync, pgBackRest
#      archive-push (zst level 1, synchronous)
#   2. archiving throughput: a fresh cluster under pgbench per archiver
#      (walgo, pgBackRest sync, pgBackRest async), time from pgbench's end
#      until the last segment is archived, WAL MiB/s overall; then a drain
#      test: a held-back backlog of .ready segments archived with nothing
#      else running (the archiver's own capacity)
#   3. peak RSS of one push (/usr/bin/time -v)
#
# Run as root on Debian (Postgres itself runs as the `postgres` OS user):
#   bash bench/wal-push.sh
# Settings (environment): see bench/README.md. The summary is printed and
# written to bench/out/wal-push-<date>.txt.
set -Eeuo pipefail
export LC_ALL=C

# ---------------------------------------------------------------- settings
SEGS=${SEGS:-20}                  # segments timed in part 1
SEG_SCALE=${SEG_SCALE:-20}        # pgbench -i scale for the part 1 segments
SEG_LOAD_S=${SEG_LOAD_S:-15}      # pgbench -T seconds after a checkpoint (full-page writes)
WAL_MB=${WAL_MB:-1024}            # part 2 WAL volume target (MiB)
# pgbench -i writes ~12.3 MiB of WAL per scale unit (PG 15, no checksums);
# the transaction phase adds ~20% (full-page writes after checkpoints).
SCALE=${SCALE:-$(( (WAL_MB * 10 + 122) / 123 ))}
LOAD_CLIENTS=${LOAD_CLIENTS:-4}
LOAD_TX=${LOAD_TX:-5000}          # transactions per client after the init
SYNC_COMMIT=${SYNC_COMMIT:-off}   # part 2 clusters' synchronous_commit
CATCHUP_TIMEOUT=${CATCHUP_TIMEOUT:-900}
RSS_RUNS=${RSS_RUNS:-3}
TP_RUNS=${TP_RUNS:-3}             # part 2 runs per mode (fresh cluster each)
DRAIN_ROUNDS=${DRAIN_ROUNDS:-2}   # pgbench -i runs whose WAL is held back for the drain test
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT_BASE=${PORT_BASE:-55432}
BENCH_TMP=${BENCH_TMP:-/var/tmp}  # on disk, not tmpfs: fsync must cost what it costs
KEEP_TMP=${KEEP_TMP:-0}

# ------------------------------------------------ part 1 inner loop (as postgres)
# Invoked as `bash wal-push.sh __single` by the postgres user, so no
# runuser/PAM cost lands inside a timing. Env: WALGO PGBR_CONF S1 SEGLIST WARM.
if [[ ${1:-} == __single ]]; then
  set -Eeuo pipefail
  export WALGO_STORAGE="file://$S1/walgo-store" WALGO_UPLOAD_CONCURRENCY=1 WALGO_LOG_LEVEL=info
  tools=(walgo zstd zstd_fsync pgbr)
  # CPU (user+sys, ms) of the waited-for children so far, from the `times`
  # builtin (no fork: a subshell would count only its own children).
  child_cpu() {
    local u s v m sec
    times >"$S1/.times"
    { read -r _; read -r u s; } <"$S1/.times"
    CPU=0
    for v in "$u" "$s"; do
      m=${v%%m*} sec=${v#*m}; sec=${sec%s}
      CPU=$(( CPU + 10#$m * 60000 + 10#${sec%.*} * 1000 + 10#${sec#*.} ))
    done
  }
  run_tool() { # tool seg -> prints "tool seg wall_us cpu_ms"
    local tool=$1 seg=$2 t0 t1 rc=0 c0
    child_cpu; c0=$CPU
    case $tool in
      walgo)
        t0=${EPOCHREALTIME//[.,]/}
        "$WALGO" wal-push "$S1/walgo/pg_wal/$seg" 2>>"$S1/walgo.log" || rc=$?
        t1=${EPOCHREALTIME//[.,]/} ;;
      zstd)
        t0=${EPOCHREALTIME//[.,]/}
        zstd -1 -q -c "$S1/src/$seg" >"$S1/zout/$seg.zst" || rc=$?
        t1=${EPOCHREALTIME//[.,]/} ;;
      zstd_fsync)
        t0=${EPOCHREALTIME//[.,]/}
        { zstd -1 -q -c "$S1/src/$seg" >"$S1/zout/$seg.fsync.zst" && sync "$S1/zout/$seg.fsync.zst"; } || rc=$?
        t1=${EPOCHREALTIME//[.,]/} ;;
      pgbr)
        t0=${EPOCHREALTIME//[.,]/}
        pgbackrest --config="$PGBR_CONF" --stanza=bench archive-push "$S1/pgbr/pg_wal/$seg" >>"$S1/pgbr.log" 2>&1 || rc=$?
        t1=${EPOCHREALTIME//[.,]/} ;;
    esac
    child_cpu
    if (( rc != 0 )); then echo "part 1: $tool failed on $seg (exit $rc); see $S1/*.log" >&2; exit 1; fi
    echo "$tool $seg $(( t1 - t0 )) $(( CPU - c0 ))"
  }
  # Warm-up on a segment that is not timed: binaries and libraries in cache.
  for t in "${tools[@]}"; do run_tool "$t" "$WARM" >/dev/null; done
  i=0
  for seg in $SEGLIST; do
    # Rotate the order per segment so no tool always runs first.
    for k in 0 1 2 3; do run_tool "${tools[(i + k) % 4]}" "$seg"; done
    i=$(( i + 1 ))
  done
  exit 0
fi

# ---------------------------------------------------------------- setup
# Shared helpers (say, as_pg, pg_init, stats, cleanup trap, build_walgo, ...).
(( SEGS >= 4 && SEGS > RSS_RUNS )) || { echo "SEGS must be at least 4 and more than RSS_RUNS" >&2; exit 2; }
SELF=$(readlink -f "$0")
source "$(dirname "$SELF")/lib.sh"
bench_init wal-push
bench_install pgbackrest
bench_tmpdir
build_walgo
cp "$SELF" "$T/wal-push.sh"
chown -R postgres: "$T"
CONDITIONS_START=$(conditions)
VERSIONS=$(versions)
say "$VERSIONS"
say "temp dir $T"

# ================================================================ part 1
S1=$T/s1
C1=$T/c1
P1=$(next_port)
mkdir -p "$S1"/{all,src,walgo/pg_wal,pgbr/pg_wal,zout,walgo-store,pgbr-repo,pgbr-log,pgbr-lock}
chown -R postgres: "$S1"
walgo_init "file://$S1/walgo-store"
say "part 1: cluster on 127.0.0.1:$P1 archiving with cp into $S1/all"
pg_init "$C1" "$P1" "cp %p $S1/all/%f"
pg_start "$C1"
pgbench "$P1" -i -q -s "$SEG_SCALE" >"$C1/pgbench-init.log" 2>&1 || die "pgbench -i failed: $C1/pgbench-init.log"
# A checkpoint before the load makes the transactions write full-page
# images, so their segments are full of real, varied WAL.
Q "$P1" checkpoint
nseg() { find "$S1/all" -maxdepth 1 -regextype posix-egrep -regex '.*/[0-9A-F]{24}' | wc -l; }
round=0
while :; do
  pgbench "$P1" -c 2 -j 2 -T "$SEG_LOAD_S" >>"$C1/pgbench-load.log" 2>&1 || die "pgbench failed: $C1/pgbench-load.log"
  last=$(Q "$P1" "select pg_walfile_name(pg_switch_wal())")
  wait_archived "$P1" "$last" 120 || die "part 1: cp archiving stalled"
  (( $(nseg) >= SEGS + 1 )) && break
  round=$(( round + 1 )); (( round < 10 )) || die "could not produce $((SEGS + 1)) segments"
done
# The stanza is created while the cluster runs (stanza-create connects to it
# and reads pg_control). archive-push itself only reads pg_control from
# pg1-path and checks its version and system id against the stanza's
# archive.info, and the segment's header against the same; the cluster may be
# stopped, and the segment may sit at any absolute path.
PGBR_CONF=$S1/pgbackrest.conf
cat >"$PGBR_CONF" <<EOF
[global]
repo1-path=$S1/pgbr-repo
log-path=$S1/pgbr-log
lock-path=$S1/pgbr-lock
compress-type=zst
compress-level=1
archive-async=n
log-level-console=warn

[bench]
pg1-path=$C1/data
pg1-port=$P1
pg1-socket-path=$T/sock

[rss]
pg1-path=$C1/data
pg1-port=$P1
pg1-socket-path=$T/sock
EOF
chown postgres: "$PGBR_CONF"
for st in bench rss; do
  as_pg pgbackrest --config="$PGBR_CONF" --stanza=$st stanza-create >>"$S1/stanza-create.log" 2>&1 || die "stanza-create failed: $S1/stanza-create.log"
done
pg_stop "$C1"

# Pick the SEGS+1 segments with the largest zstd -1 output: the most real
# WAL, fewest zero-filled tails. The smallest of them is the warm-up.
for f in "$S1"/all/*; do
  [[ $(basename "$f") =~ ^[0-9A-F]{24}$ ]] || continue
  echo "$(zstd -1 -q -c "$f" | wc -c) $(basename "$f")"
done | sort -rn | head -n $(( SEGS + 1 )) >"$S1/picked"
WARM=$(tail -n 1 "$S1/picked" | cut -d' ' -f2)
SEGLIST=$(head -n "$SEGS" "$S1/picked" | cut -d' ' -f2 | sort | tr '\n' ' ')
ZSTD_RATIO=$(head -n "$SEGS" "$S1/picked" | awk '{s += $1} END {printf "%.2f", NR * 16777216 / s}')
for seg in $WARM $SEGLIST; do
  cp "$S1/all/$seg" "$S1/src/$seg"          # zstd reads these
  cp "$S1/all/$seg" "$S1/walgo/pg_wal/$seg" # a pg_wal without archive_status: no look-ahead
  cp "$S1/all/$seg" "$S1/pgbr/pg_wal/$seg"
done
chown -R postgres: "$S1"
sync  # no dirty page cache writing back during the timings
say "part 1: timing $SEGS segments (zstd -1 ratio ${ZSTD_RATIO}x; warm-up $WARM)"
as_pg env WALGO="$WALGO" PGBR_CONF="$PGBR_CONF" S1="$S1" SEGLIST="$SEGLIST" WARM="$WARM" PATH="$PATH" \
  bash "$T/wal-push.sh" __single >"$S1/times" || die "part 1 timing loop failed"
# Sanity: every tool stored every segment.
n_walgo=$(find "$S1/walgo-store" -name '*.zst' | wc -l)
n_pgbr=$(find "$S1/pgbr-repo/archive/bench" -name '*.zst' | wc -l)
(( n_walgo == SEGS + 1 && n_pgbr == SEGS + 1 )) || die "part 1: expected $((SEGS + 1)) stored segments, walgo has $n_walgo, pgBackRest $n_pgbr"
declare -A MED P90 CPUMED
for t in walgo zstd zstd_fsync pgbr; do
  read -r MED[$t] P90[$t] < <(awk -v t=$t '$1 == t {print $3 / 1000}' "$S1/times" | stats)
  read -r CPUMED[$t] _ < <(awk -v t=$t '$1 == t {print $4}' "$S1/times" | stats)
done
# walgo's own "took" (from its log) vs the process' wall time: the rest is
# process start, settings, logger, store setup and exit.
WALGO_TOOK=$(grep -P '\tpushed\t' "$S1/walgo.log" | tail -n "$SEGS" | grep -o '"took": "[^"]*"' | cut -d'"' -f4 |
  awk '{v = $1; if (v ~ /ms$/) {sub(/ms$/, "", v)} else if (v ~ /µs$/) {sub(/µs$/, "", v); v /= 1000} else if (v ~ /s$/) {sub(/s$/, "", v); v *= 1000}; print v}' | stats | cut -d' ' -f1)

# ================================================================ part 3 (RSS)
# Before part 2, while the part 1 segments are at hand. Each run uses fresh
# storage, so every push really compresses and writes.
say "part 3: peak RSS, $RSS_RUNS runs each"
R=$T/rss
mkdir -p "$R"; chown postgres: "$R"
read -r -a SEGARR <<<"$SEGLIST"
lookahead_ok=1
# timev KIND FILE: append "rss_MiB wall_ms cpu_ms" of a /usr/bin/time -v report
timev() {
  awk -F': ' '/Maximum resident set size/ {r = $2 / 1024}
    /User time/ {c += $2} /System time/ {c += $2}
    /Elapsed \(wall clock\)/ {n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i]}
    END {printf "%.1f %.0f %.0f\n", r, w * 1000, c * 1000}' "$2" >>"$R/$1.rss"
}
for k in $(seq 1 "$RSS_RUNS"); do
  d=$R/off$k; mkdir -p "$d/pg_wal" "$d/store"; cp "$S1/src/${SEGARR[0]}" "$d/pg_wal/"; chown -R postgres: "$d"
  walgo_init "file://$d/store"
  as_pg env WALGO_STORAGE="file://$d/store" WALGO_UPLOAD_CONCURRENCY=1 /usr/bin/time -v -o "$d/time" "$WALGO" wal-push "$d/pg_wal/${SEGARR[0]}" 2>>"$R/walgo.log" || die "rss: walgo (off) failed"
  timev walgo_off "$d/time"
  # The background pusher a backlog starts (wal-push-ahead, default
  # concurrency 4), run by itself on 8 .ready segments: the settings come on
  # stdin, as wal-push hands them over.
  d=$R/on$k; mkdir -p "$d/pg_wal/archive_status"
  for j in 0 1 2 3 4 5 6 7; do cp "$S1/src/${SEGARR[j]}" "$d/pg_wal/"; touch "$d/pg_wal/archive_status/${SEGARR[j]}.ready"; done
  mkdir -p "$d/store"; chown -R postgres: "$d"
  walgo_init "file://$d/store"
  printf '{"flags":{"storage":"file://%s/store"}}' "$d" | as_pg /usr/bin/time -v -o "$d/time" "$WALGO" wal-push-ahead "$d/pg_wal" 2>>"$R/walgo.log" || die "rss: walgo wal-push-ahead failed"
  timev walgo_on "$d/time"
  [[ $(find "$d/store" -name '*.zst' | wc -l) == 8 ]] || lookahead_ok=0
  # pgBackRest: a segment the "rss" stanza has not seen yet.
  d=$R/pgbr$k; mkdir -p "$d/pg_wal"; cp "$S1/src/${SEGARR[k]}" "$d/pg_wal/"; chown -R postgres: "$d"
  as_pg /usr/bin/time -v -o "$d/time" pgbackrest --config="$PGBR_CONF" --stanza=rss archive-push "$d/pg_wal/${SEGARR[k]}" >>"$R/pgbr.log" 2>&1 || die "rss: pgbackrest failed"
  timev pgbr "$d/time"
  as_pg /usr/bin/time -v -o "$R/zstd$k.time" zstd -1 -q -c "$S1/src/${SEGARR[0]}" >/dev/null
  timev zstd "$R/zstd$k.time"
done
# rssrow KIND -> "max RSS, median wall ms, median CPU ms"
rssrow() {
  echo "$(cut -d' ' -f1 "$R/$1.rss" | sort -g | tail -n 1) $(cut -d' ' -f2 "$R/$1.rss" | stats | cut -d' ' -f1) $(cut -d' ' -f3 "$R/$1.rss" | stats | cut -d' ' -f1)"
}
read -r RSS_OFF _ _ < <(rssrow walgo_off)
read -r RSS_ON _ _ < <(rssrow walgo_on)

# ================================================================ part 2
# throughput MODE RUN: a fresh cluster archiving through MODE.
#  live:  pgbench -i -s SCALE, then -c LOAD_CLIENTS -t LOAD_TX, archiving as
#         it goes; catch-up = pgbench end until the last segment is archived.
#  drain: archive_command set to '' (Postgres keeps the WAL as .ready), the
#         same pgbench -i again, sync, then the command is restored: the time
#         to archive that backlog is the archiver's own throughput, with no
#         pgbench competing for the CPU.
TPF=$T/throughput.txt
: >"$TPF"
throughput() {
  local mode=$1 run=$2 dir=$T/tp-$1-$2 port cmd conf=
  port=$(next_port)
  mkdir -p "$dir/store" "$dir/repo" "$dir/log" "$dir/lock" "$dir/spool"
  case $mode in
    walgo)
      printf 'WALGO_STORAGE=file://%s/store\nWALGO_COMPRESSION=zstd\n' "$dir" >"$dir/walgo.conf"
      chown -R postgres: "$dir"; walgo_init "file://$dir/store"
      cmd="$WALGO --config $dir/walgo.conf wal-push %p" ;;
    pgbr-sync|pgbr-async)
      conf=$dir/pgbackrest.conf
      cat >"$conf" <<EOF
[global]
repo1-path=$dir/repo
log-path=$dir/log
lock-path=$dir/lock
spool-path=$dir/spool
compress-type=zst
compress-level=1
archive-async=$([[ $mode == pgbr-async ]] && echo y || echo n)
process-max=2
log-level-console=warn

[bench]
pg1-path=$dir/data
pg1-port=$port
pg1-socket-path=$T/sock
EOF
      cmd="pgbackrest --config=$conf --stanza=bench archive-push %p" ;;
  esac
  chown -R postgres: "$dir"
  pg_init "$dir" "$port" "$cmd" "synchronous_commit = $SYNC_COMMIT"
  pg_start "$dir"
  if [[ -n $conf ]]; then
    as_pg pgbackrest --config="$conf" --stanza=bench stanza-create >"$dir/stanza-create.log" 2>&1 || die "stanza-create failed: $dir/stanza-create.log"
  fi
  sync; sleep 1

  # live
  local lsn0 lsn1 t0 t1 t2 last backlog tps failed wal_mib load_s lag_s rate
  lsn0=$(Q "$port" "select pg_current_wal_lsn()")
  t0=$(us_now)
  pgbench "$port" -i -q -s "$SCALE" >"$dir/pgbench-init.log" 2>&1 || die "pgbench -i failed: $dir/pgbench-init.log"
  pgbench "$port" -c "$LOAD_CLIENTS" -j 2 -t "$LOAD_TX" >"$dir/pgbench-load.log" 2>&1 || die "pgbench failed: $dir/pgbench-load.log"
  t1=$(us_now)
  backlog=$(find "$dir/data/pg_wal/archive_status" -name '*.ready' | wc -l)
  last=$(Q "$port" "select pg_walfile_name(pg_switch_wal())")
  lsn1=$(Q "$port" "select pg_current_wal_lsn()")
  if wait_archived "$port" "$last" "$CATCHUP_TIMEOUT"; then t2=$(( ARCH_US > t1 ? ARCH_US : t1 )); else t2=timeout; fi
  failed=$(Q "$port" "select failed_count from pg_stat_archiver")
  wal_mib=$(Q "$port" "select round(pg_wal_lsn_diff('$lsn1', '$lsn0') / 1048576.0, 1)")
  tps=$(grep -o 'tps = [0-9.]*' "$dir/pgbench-load.log" | head -1 | cut -d' ' -f3)
  load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
  if [[ $t2 == timeout ]]; then lag_s=nan; rate=nan
  else
    lag_s=$(awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.2f", (b - a) / 1e6}')
    rate=$(awk -v m="$wal_mib" -v a="$t0" -v b="$t2" 'BEGIN {printf "%.1f", m / ((b - a) / 1e6)}')
  fi
  say "part 2: $mode run $run live: WAL ${wal_mib} MiB, load ${load_s}s, backlog $backlog, catch-up ${lag_s}s, ${rate} MiB/s, failed $failed"

  # drain
  local d0 d1 i nready drain_s drain_rate stored
  Q "$port" "alter system set archive_command = ''"; Q "$port" "select pg_reload_conf()" >/dev/null
  sleep 1
  for i in $(seq 1 "$DRAIN_ROUNDS"); do
    pgbench "$port" -i -q -s "$SCALE" >"$dir/pgbench-init2.log" 2>&1 || die "pgbench -i failed: $dir/pgbench-init2.log"
  done
  last=$(Q "$port" "select pg_walfile_name(pg_switch_wal())")
  nready=$(find "$dir/data/pg_wal/archive_status" -name '*.ready' | wc -l)
  sync; sleep 1
  d0=$(us_now)
  Q "$port" "alter system reset archive_command"; Q "$port" "select pg_reload_conf()" >/dev/null
  if wait_archived "$port" "$last" "$CATCHUP_TIMEOUT"; then
    d1=$ARCH_US
    drain_s=$(awk -v a="$d0" -v b="$d1" 'BEGIN {printf "%.2f", (b - a) / 1e6}')
    drain_rate=$(awk -v n="$nready" -v s="$drain_s" 'BEGIN {printf "%.1f", n * 16 / s}')
  else drain_s=nan; drain_rate=nan; fi
  failed=$(Q "$port" "select failed_count from pg_stat_archiver")
  say "part 2: $mode run $run drain: $nready segments in ${drain_s}s, ${drain_rate} MiB/s, failed $failed"
  pg_stop "$dir"
  if [[ $mode == walgo ]]; then stored=$(find "$dir/store" -name '*.zst' | wc -l)
  else stored=$(find "$dir/repo/archive" -name '*.zst' | wc -l); fi
  echo "$mode $run $wal_mib $load_s $backlog $lag_s $rate $tps $nready $drain_s $drain_rate $stored $failed" >>"$TPF"
  # Free the disk before the next run.
  rm -rf "$dir/data" "$dir/store" "$dir/repo" "$dir/spool"
}
say "part 2: throughput, pgbench -i -s $SCALE + -c $LOAD_CLIENTS -t $LOAD_TX; $TP_RUNS runs per mode, modes interleaved (WAL target ${WAL_MB} MiB)"
for r in $(seq 1 "$TP_RUNS"); do
  for m in walgo pgbr-sync pgbr-async; do throughput "$m" "$r"; done
done
# Fields of $TPF: 1 mode, 2 run, 3 WAL MiB, 4 load s, 5 backlog, 6 catch-up s,
# 7 MiB/s, 8 tps, 9 drain segments, 10 drain s, 11 drain MiB/s, 12 stored, 13 failed
tpcol() { awk -v m="$1" -v f="$2" '$1 == m {print $f}' "$TPF"; }
tpmed() { tpcol "$1" "$2" | grep -v nan | stats | cut -d' ' -f1; }
tpall() { tpcol "$1" "$2" | paste -sd' '; }
tpsum() { tpcol "$1" "$2" | awk '{s += $1} END {print s + 0}'; }
mode_name() { case $1 in walgo) echo "walgo (background pusher, 4)";; pgbr-sync) echo "pgBackRest sync";; pgbr-async) echo "pgBackRest async (process-max 2)";; esac; }

# ================================================================ summary
CONDITIONS_END=$(conditions)
{
  echo "walgo wal-push benchmark, $STAMP"
  echo "$VERSIONS"
  echo "conditions at start:"; sed 's/^/  /' <<<"$CONDITIONS_START"
  echo "conditions at end:";   sed 's/^/  /' <<<"$CONDITIONS_END"
  echo
  echo "1. single segment: $SEGS real pgbench segments of 16 MiB (zstd -1 ratio ${ZSTD_RATIO}x), one process each,"
  echo "   exec included, tools interleaved per segment (order rotated), warm-up run not counted;"
  echo "   CPU = user+sys of the process (median, ms)"
  printf '   %-52s %9s %9s %7s\n' tool "median ms" "p90 ms" "CPU ms"
  printf '   %-52s %9s %9s %7s\n' "walgo wal-push, file storage, look-ahead off" "${MED[walgo]}" "${P90[walgo]}" "${CPUMED[walgo]}"
  printf '   %-52s %9s %9s %7s\n' "zstd -1 -q -c SEG > OUT (no fsync)" "${MED[zstd]}" "${P90[zstd]}" "${CPUMED[zstd]}"
  printf '   %-52s %9s %9s %7s\n' "zstd -1 -q -c SEG > OUT && sync OUT (fsync)" "${MED[zstd_fsync]}" "${P90[zstd_fsync]}" "${CPUMED[zstd_fsync]}"
  printf '   %-52s %9s %9s %7s\n' "pgbackrest archive-push (zst 1, sync, posix repo)" "${MED[pgbr]}" "${P90[pgbr]}" "${CPUMED[pgbr]}"
  echo "   walgo/pgBackRest $(ratio "${MED[walgo]}" "${MED[pgbr]}") (median), $(ratio "${P90[walgo]}" "${P90[pgbr]}") (p90)   target <= 0.70: $(pass "$(ratio "${MED[walgo]}" "${MED[pgbr]}")" 0.70 le)"
  echo "   walgo/zstd $(ratio "${MED[walgo]}" "${MED[zstd]}"), walgo/(zstd+fsync) $(ratio "${MED[walgo]}" "${MED[zstd_fsync]}") (medians)"
  echo "   walgo's own logged 'took' median ${WALGO_TOOK} ms: the other $(awk -v a="${MED[walgo]}" -v b="$WALGO_TOOK" 'BEGIN {printf "%.1f", a - b}') ms of its wall time are process start, setup and exit"
  echo
  echo "2. archiving throughput: a fresh PG 15 cluster per mode and run ($TP_RUNS runs, modes interleaved); medians, [every run]"
  echo "   live: pgbench -i -s $SCALE then -c $LOAD_CLIENTS -j 2 -t $LOAD_TX (synchronous_commit=$SYNC_COMMIT), archiving as it goes;"
  echo "   catch-up = pgbench end -> pg_stat_archiver.last_archived_wal >= pg_walfile_name(pg_switch_wal());"
  echo "   MiB/s = WAL / (load + catch-up); backlog = .ready files at pgbench end"
  printf '   %-34s %8s %7s %8s %10s  %s\n' mode "WAL MiB" "load s" backlog "catch-up s" "MiB/s"
  for m in walgo pgbr-sync pgbr-async; do
    printf '   %-34s %8s %7s %8s %10s  %s\n' "$(mode_name $m)" "$(tpmed $m 3)" "$(tpmed $m 4)" "$(tpmed $m 5)" "$(tpmed $m 6)" "$(tpmed $m 7) [$(tpall $m 7)]"
  done
  echo "   drain: archive_command='' while pgbench -i -s $SCALE runs $DRAIN_ROUNDS more time(s) (WAL held as .ready), sync, then"
  echo "   the command restored: time until all of it is archived (last_archived_time), nothing else running"
  printf '   %-34s %8s %10s  %s\n' mode segments "drain s" "MiB/s"
  for m in walgo pgbr-sync pgbr-async; do
    printf '   %-34s %8s %10s  %s\n' "$(mode_name $m)" "$(tpmed $m 9)" "$(tpmed $m 10)" "$(tpmed $m 11) [$(tpall $m 11)]"
  done
  echo "   archive_command failures over all runs: walgo $(tpsum walgo 13), pgBackRest sync $(tpsum pgbr-sync 13), async $(tpsum pgbr-async 13)"
  rw=$(tpmed walgo 7) rs=$(tpmed pgbr-sync 7) ra=$(tpmed pgbr-async 7)
  dw=$(tpmed walgo 11) ds=$(tpmed pgbr-sync 11) da=$(tpmed pgbr-async 11)
  echo "   walgo/pgBackRest MiB/s: live $(ratio "$rw" "$rs")x sync, $(ratio "$rw" "$ra")x async; drain $(ratio "$dw" "$ds")x sync, $(ratio "$dw" "$da")x async"
  echo "   target (walgo ahead of both pgBackRest modes): live $(awk -v w="$rw" -v s="$rs" -v a="$ra" 'BEGIN {print (w + 0 > s + 0 && w + 0 > a + 0) ? "met" : "MISSED"}'), drain $(awk -v w="$dw" -v s="$ds" -v a="$da" 'BEGIN {print (w + 0 > s + 0 && w + 0 > a + 0) ? "met" : "MISSED"}')"
  echo
  echo "3. peak RSS of one push (max of $RSS_RUNS runs, /usr/bin/time -v; wall and CPU medians, 10 ms CPU resolution)"
  printf '   %-52s %8s %8s %7s\n' tool "RSS MiB" "wall ms" "CPU ms"
  printf '   %-52s %8s %8s %7s\n' "walgo wal-push, look-ahead off" $(rssrow walgo_off)
  printf '   %-52s %8s %8s %7s%s\n' "walgo background pusher (wal-push-ahead), 8 segments" $(rssrow walgo_on) "$([[ $lookahead_ok == 1 ]] || echo '  (the pusher did not store all 8!)')"
  printf '   %-52s %8s %8s %7s\n' "pgbackrest archive-push (sync)" $(rssrow pgbr)
  printf '   %-52s %8s %8s %7s\n' "zstd -1 (reference)" $(rssrow zstd)
  echo "   target <= 64 MiB: one push $(pass "$RSS_OFF" 64 le), background pusher $(pass "$RSS_ON" 64 le)"
} | tee "$OUT"
say "summary written to $OUT"
