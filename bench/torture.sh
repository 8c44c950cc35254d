#!/usr/bin/env bash
# bench/torture.sh SEEDS [SCALE]: the restore-equivalence harness
# (internal/torture, integration.TestTorture) over many seeds at a larger
# size than CI. SEEDS is a count (50: seeds 1-50), a range (101-150) or a
# list (3,17,42); SCALE (default 2) sets the rounds and rows of each
# workload. Every seed runs in its own test process; the summary gives
# seeds, points, backups, restores by target kind, failures (with the
# seeds and the command that reproduces each) and time, printed and
# written to bench/out/torture-<date>.txt, with each failed seed's whole
# log next to it.
#
# Environment: FEATURES (default all: every workload feature), COVERAGE
# (sample, the default, or exhaustive: every point from every backup that
# covers it, for every target kind), JOBS (seeds at once, default 1),
# KEEP_GOING=0 stops at the first failed seed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
bench_init torture

SEEDS=${1:?usage: bench/torture.sh SEEDS [SCALE]   (SEEDS: a count, A-B or a,b,c)}
SCALE=${2:-2}
FEATURES=${FEATURES:-all}
COVERAGE=${COVERAGE:-sample}
JOBS=${JOBS:-1}
KEEP_GOING=${KEEP_GOING:-1}
[[ $SEEDS =~ ^[0-9]+$ ]] && SEEDS=1-$SEEDS
seeds=()
IFS=, read -ra parts <<<"$SEEDS"
for p in "${parts[@]}"; do
  if [[ $p =~ ^([0-9]+)-([0-9]+)$ ]]; then
    for ((s = BASH_REMATCH[1]; s <= BASH_REMATCH[2]; s++)); do seeds+=("$s"); done
  elif [[ $p =~ ^[0-9]+$ ]]; then
    seeds+=("$p")
  else
    die "SEEDS: $p is not a number or a range"
  fi
done
(( ${#seeds[@]} > 0 )) || die "no seeds"
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || die "SCALE must be a positive number"

ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || die "PostgreSQL is not installed (bash scripts/test.sh installs it)"
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
mkdir -p "$OUTDIR"
LOGDIR=$OUTDIR/torture-$STAMP
mkdir -p "$LOGDIR"
T=$LOGDIR BENCH_TMP=${TMPDIR:-/tmp} # for lib.sh's conditions
BIN=$LOGDIR/integration.test
say "building the integration tests"
(cd "$ROOT" && go test -c -o "$BIN" ./integration) || die "go test -c failed"

run_seed() { # SEED: runs one seed, leaves its log in $LOGDIR/seed-N.log and its exit status in .rc
  local seed=$1 log=$LOGDIR/seed-$1.log rc=0
  (cd "$ROOT/integration" && WALGO_TEST_NO_SKIP=1 WALGO_TORTURE_SEEDS=$seed WALGO_TORTURE_SCALE=$SCALE \
    WALGO_TORTURE_FEATURES=$FEATURES WALGO_TORTURE_COVERAGE=$COVERAGE \
    "$BIN" -test.run '^TestTorture$' -test.v -test.count=1 -test.timeout 0) >"$log" 2>&1 || rc=$?
  echo "$rc" >"$log.rc"
}

start=$(us_now)
say "torture: ${#seeds[@]} seeds (${seeds[0]}..${seeds[-1]}), scale $SCALE, features $FEATURES, coverage $COVERAGE, $JOBS at once"
running=0 n=0
for seed in "${seeds[@]}"; do
  if [[ $KEEP_GOING == 0 ]] && grep -qsv '^0$' "$LOGDIR"/seed-*.log.rc; then say "a seed failed; stopping (KEEP_GOING=0)"; break; fi
  n=$((n + 1))
  say "seed $seed ($n of ${#seeds[@]}); failed so far: $(grep -lsv '^0$' "$LOGDIR"/seed-*.log.rc | wc -l)"
  run_seed "$seed" &
  running=$((running + 1))
  if (( running >= JOBS )); then wait -n || true; running=$((running - 1)); fi
done
wait
took_s=$(( ($(us_now) - start) / 1000000 ))

# Each seed's summary line: "torture: seed N: checksums on, S steps, P points, B backups, R restores (time a, lsn b, ...), F faulted, X failures, T"
points=0 backups=0 deltas=0 followers=0 restores=0 refusals=0 failures=0 ran=0 nochecksums=0 s3=0
declare -A kinds=()
failed_seeds=()
for seed in "${seeds[@]}"; do
  log=$LOGDIR/seed-$seed.log
  [[ -f $log.rc ]] || continue
  ran=$((ran + 1))
  line=$(grep -m1 -o 'torture: seed [0-9]*: .*' "$log" || true)
  rc=$(cat "$log.rc")
  if [[ -z $line ]]; then
    failed_seeds+=("$seed (no summary: the test did not finish, exit $rc)")
    continue
  fi
  [[ $line =~ checksums\ off ]] && nochecksums=$((nochecksums + 1))
  [[ $line =~ s3\ repository ]] && s3=$((s3 + 1))
  [[ $line =~ ([0-9]+)\ points ]] && points=$((points + BASH_REMATCH[1]))
  [[ $line =~ ([0-9]+)\ backups ]] && backups=$((backups + BASH_REMATCH[1]))
  [[ $line =~ \(([0-9]+)\ deltas\) ]] && deltas=$((deltas + BASH_REMATCH[1]))
  [[ $line =~ ([0-9]+)\ followers ]] && followers=$((followers + BASH_REMATCH[1]))
  [[ $line =~ ([0-9]+)\ restores ]] && restores=$((restores + BASH_REMATCH[1]))
  [[ $line =~ ([0-9]+)\ beyond ]] && refusals=$((refusals + BASH_REMATCH[1]))
  [[ $line =~ ([0-9]+)\ failures ]] && f=${BASH_REMATCH[1]} || f=0
  failures=$((failures + f))
  if [[ $line =~ restores\ \(([a-z0-9 ,]*)\) ]]; then
    IFS=, read -ra ks <<<"${BASH_REMATCH[1]}"
    for k in "${ks[@]}"; do
      read -r name n <<<"$k"
      kinds[$name]=$(( ${kinds[$name]:-0} + n ))
    done
  fi
  if [[ $rc != 0 || $f != 0 ]]; then
    failed_seeds+=("$seed ($f failures, exit $rc; log $log)")
  else
    rm -f "$log" "$log.rc"
  fi
done
by_kind=""
for k in time lsn xid name immediate end; do [[ -n ${kinds[$k]:-} ]] && by_kind+="$k ${kinds[$k]}, "; done

{
  echo "bench/torture.sh $(date -u '+%Y-%m-%d %H:%M UTC'): walgo at $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && [[ -n $(git status --porcelain --untracked-files=no) ]] && echo ' with local changes')"
  conditions
  echo
  echo "seeds       ${#seeds[@]} asked, $ran run (${seeds[0]}..${seeds[-1]}): $nochecksums without data checksums, $s3 on S3"
  echo "scale       $SCALE, features $FEATURES, coverage $COVERAGE"
  echo "points      $points recorded"
  echo "backups     $backups taken, $deltas of them deltas"
  echo "restores    $restores started and compared (${by_kind%, })"
  echo "refusals    $refusals targets beyond the archive tried (each must be refused)"
  echo "followers   $followers standbys compared at the end"
  echo "failures    $failures in ${#failed_seeds[@]} seeds"
  for s in "${failed_seeds[@]}"; do echo "  seed $s"; done
  (( ${#failed_seeds[@]} )) && echo "  reproduce one: WALGO_TORTURE_SEEDS=N WALGO_TORTURE_SCALE=$SCALE WALGO_TORTURE_FEATURES=$FEATURES WALGO_TORTURE_COVERAGE=$COVERAGE go test ./integration -run '^TestTorture\$' -count=1 -v -timeout 0"
  printf 'time        %dm%02ds (%s s per seed)\n' $((took_s / 60)) $((took_s % 60)) "$(awk -v t=$took_s -v n=$ran 'BEGIN { printf "%.0f", n ? t / n : 0 }')"
} | tee "$OUTDIR/torture-$STAMP.txt"
rm -f "$BIN"
rmdir "$LOGDIR" 2>/dev/null || true
(( ${#failed_seeds[@]} == 0 ))
