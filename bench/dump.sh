#!/usr/bin/env bash
# bench/dump.sh: walgo's logical backups against their baselines, on one
# pgbench database (>= 1 GiB), in one run.
#
#   1. walgo dump-push (file repository, default zstd) vs
#      pg_dump -Fc --no-acl --no-owner -f FILE: wall time, CPU, peak RSS,
#      and the sizes of pg_dump's output and of what walgo stored
#   2. walgo copy vs pg_dump -Fc --no-acl --no-owner | pg_restore --no-owner
#      --no-acl -d, each time into a fresh database of a second cluster
#   3. walgo restore-test of a base backup (backup-push with the disk rate
#      limit off first): wall time by phase (download, replay, check)
#
# Parts 1 and 2: RUNS runs per tool after a warm-up round, interleaved,
# medians. The page cache is left warm (the database is read through
# Postgres by both tools alike).
#
# Run as root on Debian (Postgres and every tool run as the `postgres` user):
#   bash bench/dump.sh
#   BENCH_SCALE=5 RUNS=1 bash bench/dump.sh     # a quick smoke run
# The summary is printed and written to bench/out/dump-<date>.txt.
set -Eeuo pipefail
export LC_ALL=C

# ---------------------------------------------------------------- settings
SCALE=${BENCH_SCALE:-${SCALE:-75}} # pgbench -i scale: ~15.3 MiB per unit, 75 = 1.12 GiB
RUNS=${RUNS:-3}                    # timed runs per tool in parts 1 and 2
RT_RUNS=${RT_RUNS:-1}              # restore-test runs in part 3
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT_BASE=${PORT_BASE:-55432}
BENCH_TMP=${BENCH_TMP:-/var/tmp}   # on disk, not tmpfs
KEEP_TMP=${KEEP_TMP:-0}

(( RUNS >= 1 && RT_RUNS >= 1 && SCALE >= 1 )) || { echo "need RUNS >= 1, RT_RUNS >= 1, SCALE >= 1" >&2; exit 2; }
SELF=$(readlink -f "$0")
source "$(dirname "$SELF")/lib.sh"
bench_init dump
bench_install jq
bench_tmpdir
build_walgo
mkdir -p "$T"/{out,drill,res}
CONDITIONS_START=$(conditions)
VERSIONS="walgo: $WALGO_FROM, $(go version | cut -d' ' -f3); $("$PGBIN/pg_dump" --version); $("$PGBIN/postgres" --version | sed 's/^postgres (PostgreSQL) /PostgreSQL /')"
say "$VERSIONS"
say "temp dir $T"

# ---------------------------------------------------------------- clusters
# The source archives into the walgo repository (backup-push and
# restore-test need its WAL). Copies go into a second cluster that archives
# nothing, so the gigabytes they write cost no archiving in later runs.
S=$T/src
D=$T/dst
PS=$(next_port)
PORT=$(( PS + 1 )) # next_port runs in a subshell here: its own increment is lost
PD=$(next_port)
WREPO=$T/walgo-repo
WCONF=$T/walgo.conf
mkdir -p "$WREPO"
printf 'WALGO_STORAGE=file://%s\nWALGO_PG_BINDIR=%s\n' "$WREPO" "$PGBIN" >"$WCONF"
chown -R postgres: "$T"
walgo_init "file://$WREPO"
pg_init "$S" "$PS" "$WALGO --config $WCONF wal-push %p"
pg_init "$D" "$PD" "/bin/true"
pg_start "$S"
pg_start "$D"
say "source on port $PS: pgbench -i -s $SCALE"
t0=$(us_now)
pgbench "$PS" -i -q -s "$SCALE" >"$S/pgbench-init.log" 2>&1 || die "pgbench -i failed: $S/pgbench-init.log"
INIT_S=$(awk -v a="$t0" -v b="$(us_now)" 'BEGIN {printf "%.0f", (b - a) / 1e6}')
Q "$PS" checkpoint
last=$(Q "$PS" "select pg_walfile_name(pg_switch_wal())")
wait_archived "$PS" "$last" 600 || die "archiving stalled after pgbench -i: $S/postgres.log"
DB_BYTES=$(Q "$PS" "select pg_database_size('postgres')")
say "database: $(awk -v b="$DB_BYTES" 'BEGIN {printf "%.2f GiB", b / 2^30}') (pgbench -i took ${INIT_S}s)"
(( DB_BYTES >= 1 << 30 )) || say "note: the database is under 1 GiB (raise BENCH_SCALE)"

SRC_DSN="host=$T/sock port=$PS user=postgres dbname=postgres"
dst_dsn() { echo "host=$T/sock port=$PD user=postgres dbname=$1"; }
WENV=(env PGHOST="$T/sock" PGPORT="$PS" PGUSER=postgres PGDATABASE=postgres)
RES=$T/res
col() { cut -d' ' -f"$2" "$RES/$1"; }                                   # KIND FIELD
med() { col "$1" "$2" | stats | cut -d' ' -f1; }                        # median
all() { col "$1" "$2" | awk '{printf "%s%.0f", (NR > 1 ? " " : ""), $1}'; }
mx() { col "$1" "$2" | sort -g | tail -n 1; }
sec() { awk -v v="$1" 'BEGIN {printf "%.2f", v / 1000}'; }             # ms -> s
mib() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1048576}'; }
last_line() { tail -n 1 "$RES/$1" | awk '{printf "%.2fs, RSS %.0f MiB, CPU %.1fs", $1 / 1000, $2, $3 / 1000}'; }

# ================================================================ part 1
say "part 1: walgo dump-push vs pg_dump -Fc -f FILE, $RUNS runs each after a warm-up round, interleaved"
tools=(walgo pgdump)
for r in $(seq 0 "$RUNS"); do   # round 0: warm-up, not counted
  SFX=; (( r > 0 )) || SFX=.warm
  for k in 0 1; do
    tool=${tools[(r + k) % 2]}
    Q "$PS" checkpoint
    case $tool in
      walgo)
        time_as_pg "$RES/push_walgo$SFX" "${WENV[@]}" "$WALGO" --config "$WCONF" dump-push \
          >"$T/push_walgo.$r.out" 2>"$T/push_walgo.$r.log" || die "walgo dump-push failed: $T/push_walgo.$r.log"
        as_pg "$WALGO" --config "$WCONF" dump-list --json | jq -r '.[-1] | "\(.size) \(.stored_size)"' >>"$RES/push_walgo_sizes" ;;
      pgdump)
        rm -f "$T/out/pg.dump"
        time_as_pg "$RES/push_pgdump$SFX" "${WENV[@]}" "$PGBIN/pg_dump" -Fc --no-acl --no-owner -f "$T/out/pg.dump" \
          2>"$T/push_pgdump.$r.log" || die "pg_dump failed: $T/push_pgdump.$r.log"
        stat -c %s "$T/out/pg.dump" >>"$RES/push_pgdump_sizes" ;;
    esac
    say "part 1 run $r${SFX:+ (warm-up)}: $tool $(last_line "push_$tool$SFX")"
  done
done
SFX=
DUMP_OUT=$(cut -d' ' -f1 "$RES/push_walgo_sizes" | tail -n 1)
DUMP_STORED=$(cut -d' ' -f2 "$RES/push_walgo_sizes" | tail -n 1)
PGDUMP_FILE=$(tail -n 1 "$RES/push_pgdump_sizes")
rm -f "$T/out/pg.dump"

# ================================================================ part 2
say "part 2: walgo copy vs pg_dump -Fc | pg_restore, into a fresh database each time, $RUNS runs each after a warm-up round"
for r in $(seq 0 "$RUNS"); do
  SFX=; (( r > 0 )) || SFX=.warm
  for k in 0 1; do
    tool=${tools[(r + k) % 2]}
    db=copy_${tool}_$r
    as_pg "$PGBIN/createdb" -h "$T/sock" -p "$PD" "$db"
    Q "$PS" checkpoint
    Q "$PD" checkpoint
    case $tool in
      walgo)
        time_as_pg "$RES/copy_walgo$SFX" env WALGO_PG_BINDIR="$PGBIN" "$WALGO" copy "$SRC_DSN" "$(dst_dsn "$db")" \
          >"$T/copy_walgo.$r.out" 2>"$T/copy_walgo.$r.log" || die "walgo copy failed: $T/copy_walgo.$r.log" ;;
      pgdump)
        time_as_pg "$RES/copy_pgdump$SFX" bash -c '"$1/pg_dump" -Fc --no-acl --no-owner -d "$2" | "$1/pg_restore" --no-owner --no-acl -d "$3"
          r=("${PIPESTATUS[@]}"); (( r[0] == 0 && r[1] == 0 ))' _ "$PGBIN" "$SRC_DSN" "$(dst_dsn "$db")" \
          2>"$T/copy_pgdump.$r.log" || die "pg_dump | pg_restore failed: $T/copy_pgdump.$r.log" ;;
    esac
    n=$(as_pg "$PGBIN/psql" -h "$T/sock" -p "$PD" -U postgres -XAtq -c "select count(*) from pgbench_accounts" "$db")
    (( n == SCALE * 100000 )) || die "part 2: $tool copied $n pgbench_accounts rows, want $(( SCALE * 100000 ))"
    say "part 2 run $r${SFX:+ (warm-up)}: $tool $(last_line "copy_$tool$SFX")"
    as_pg "$PGBIN/dropdb" -h "$T/sock" -p "$PD" "$db"
  done
done
SFX=
# walgo's own split: data (until pg_dump's output ended) and the rest
COPY_SPLIT=$(grep -ho 'data [0-9.a-zµ]*, indexes and constraints [0-9.a-zµ]*' "$T"/copy_walgo.[1-9]*.out | tr '\n' ';' | sed 's/;$//; s/;/; /g')

# ================================================================ part 3
say "part 3: backup-push (disk rate limit off), then restore-test $RT_RUNS time(s)"
t0=$(us_now)
as_pg "${WENV[@]}" WALGO_DISK_RATE_LIMIT=0 "$WALGO" --config "$WCONF" backup-push >"$T/backup-push.log" 2>&1 \
  || die "backup-push failed: $T/backup-push.log"
PUSH_S=$(awk -v a="$t0" -v b="$(us_now)" 'BEGIN {printf "%.1f", (b - a) / 1e6}')
say "part 3: backup-push took ${PUSH_S}s"
for r in $(seq 1 "$RT_RUNS"); do
  time_as_pg "$RES/rt" "${WENV[@]}" "$WALGO" --config "$WCONF" restore-test --work-dir "$T/drill" \
    >"$T/rt.$r.out" 2>"$T/rt.$r.log" || die "restore-test failed: $T/rt.$r.out and $T/rt.$r.log"
  say "part 3 run $r: $(last_line rt)"
done
# phase PHASE: the phase's durations of every run, as restore-test printed them
phase() { awk -v p="$1" '$1 == p {print $2}' "$T"/rt.*.out | paste -sd ' '; }

# ================================================================ summary
CONDITIONS_END=$(conditions)
row() { printf '   %-46s %7s %7s %7s  %-28s %s\n' "$@"; }
{
  echo "walgo dump benchmark, $STAMP"
  echo "$VERSIONS"
  echo "conditions at start:"; sed 's/^/  /' <<<"$CONDITIONS_START"
  echo "conditions at end:";   sed 's/^/  /' <<<"$CONDITIONS_END"
  echo "data: pgbench -i -s $SCALE (${INIT_S}s), database $(awk -v b="$DB_BYTES" 'BEGIN {printf "%.2f GiB", b / 2^30}') ($DB_BYTES bytes); page cache warm"
  echo
  echo "1. logical backup; $RUNS runs per tool after a warm-up round, interleaved, medians, [every run]"
  echo "   wall = the command's wall time; CPU = user+sys of it and its children; RSS = the largest single process"
  row tool "wall s" "CPU s" "RSS MiB" "wall ms, every run" "size"
  row "walgo dump-push (zstd, file repository)" "$(sec "$(med push_walgo 1)")" "$(sec "$(med push_walgo 3)")" "$(mx push_walgo 2)" \
    "[$(all push_walgo 1)]" "$(mib "$DUMP_STORED") MiB stored ($(mib "$DUMP_OUT") MiB from pg_dump)"
  row "pg_dump -Fc --no-acl --no-owner -f FILE" "$(sec "$(med push_pgdump 1)")" "$(sec "$(med push_pgdump 3)")" "$(mx push_pgdump 2)" \
    "[$(all push_pgdump 1)]" "$(mib "$PGDUMP_FILE") MiB file"
  PUSH_RATIO=$(ratio "$(med push_walgo 1)" "$(med push_pgdump 1)")
  echo "   walgo/pg_dump time ${PUSH_RATIO}   target <= 1.05: $(pass "$PUSH_RATIO" 1.05 le);   CPU $(ratio "$(med push_walgo 3)" "$(med push_pgdump 3)")"
  echo "   stored/pg_dump's own output $(ratio "$DUMP_STORED" "$DUMP_OUT") (pg_dump -Fc compresses with zlib at its default level; walgo's zstd runs on top)"
  echo
  echo "2. copy into a fresh database of a second cluster; $RUNS runs per tool after a warm-up round, interleaved, medians"
  row tool "wall s" "CPU s" "RSS MiB" "wall ms, every run" ""
  row "walgo copy SRC DST" "$(sec "$(med copy_walgo 1)")" "$(sec "$(med copy_walgo 3)")" "$(mx copy_walgo 2)" "[$(all copy_walgo 1)]" ""
  row "pg_dump -Fc | pg_restore -d DST" "$(sec "$(med copy_pgdump 1)")" "$(sec "$(med copy_pgdump 3)")" "$(mx copy_pgdump 2)" "[$(all copy_pgdump 1)]" ""
  COPY_RATIO=$(ratio "$(med copy_walgo 1)" "$(med copy_pgdump 1)")
  echo "   walgo/pipe time ${COPY_RATIO}   target <= 1.05: $(pass "$COPY_RATIO" 1.05 le)"
  echo "   walgo's split per run (data until pg_dump's output ended, then indexes and constraints): $COPY_SPLIT"
  echo
  echo "3. restore-test of a base backup of the source (backup-push with WALGO_DISK_RATE_LIMIT=0 took ${PUSH_S}s); $RT_RUNS run(s)"
  echo "   wall s: [$(all rt 1 | awk '{for (i = 1; i <= NF; i++) printf "%s%.2f", (i > 1 ? " " : ""), $i / 1000}')]   peak RSS $(mx rt 2) MiB"
  echo "   by phase, as restore-test printed them (every run):"
  echo "     download (backup-fetch)                 $(phase download)"
  echo "     replay (start, recovery, promotion)     $(phase replay)"
  echo "     check (pg_amcheck --heapallindexed)     $(phase check)"
  echo "     total                                   $(phase total)"
} | tee "$OUT"
say "summary written to $OUT"
