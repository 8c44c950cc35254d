#!/usr/bin/env bash
# PostgreSQL's own recovery TAP tests (src/test/recovery of the PostgreSQL 15
# source pinned in scripts/versions) against the installed PostgreSQL 15, with
# walgo instead of cp: test/pgtap/PostgreSQL/Test/Walgo.pm makes every node's
# archive_command `walgo wal-push` and restore_command `walgo wal-fetch` on a
# walgo file repository in the node's archive directory.
#
#   bash scripts/pg-recovery-tests.sh                  # the tests that archive or restore (README)
#   bash scripts/pg-recovery-tests.sh t/002_archiving.pl t/024_archive_recovery.pl
#
# Installs what it needs when missing (as root or with sudo): PostgreSQL 15,
# libipc-run-perl, and a deb-src entry for apt-get source. The source package
# is downloaded once into ${XDG_CACHE_HOME:-~/.cache}/walgo. As root the tests
# run as the postgres user (Postgres refuses root). A failed run keeps its
# folder and prints the failed tests' logs; PG_TEST_NOCLEAN=1 keeps it (and
# the nodes' data directories) after a passing run too.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. scripts/versions

# The tests that archive or restore; README's "PostgreSQL's recovery tests"
# says why the others are left out.
default_tests=(
  t/002_archiving.pl
  t/003_recovery_targets.pl
  t/004_timeline_switch.pl
  t/010_logical_decoding_timelines.pl
  t/020_archive_status.pl
  t/023_pitr_prepared_xact.pl
  t/024_archive_recovery.pl
  t/025_stuck_on_old_timeline.pl
  t/028_pitr_timelines.pl
  t/043_no_contrecord_switch.pl
  t/045_archive_restartpoint.pl
)
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=("${default_tests[@]}")

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_update() { [ -n "$apt_updated" ] || as_root apt-get update -qq; apt_updated=1; }

bindir=/usr/lib/postgresql/$PG_MAJOR/bin
pg_regress=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test/regress/pg_regress
if [ ! -x "$bindir/initdb" ] || [ ! -x "$pg_regress" ]; then
  echo "== installing PostgreSQL $PG_MAJOR (Debian package)"
  apt_update
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "postgresql-$PG_MAJOR" >/dev/null
fi
if ! perl -MIPC::Run -e 1 2>/dev/null || ! command -v prove >/dev/null; then
  echo "== installing libipc-run-perl (the TAP harness needs IPC::Run)"
  apt_update
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libipc-run-perl perl >/dev/null
fi

# The source package, once: apt-get source checks it against the signed
# Sources index.
pkg=postgresql-$PG_MAJOR
upstream=${PG_SOURCE_VERSION%%-*}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/walgo/$pkg-$PG_SOURCE_VERSION
tarball=$cache/${pkg}_$upstream.orig.tar.bz2
# The versions apt offers (into a variable: a grep -q in the pipe would end
# apt-cache with SIGPIPE, which pipefail reports as a failure).
source_versions() { apt-cache showsrc "$pkg" 2>/dev/null | sed -n 's/^Version: //p' || true; }
if [ ! -s "$tarball" ]; then
  offered=$(source_versions)
  if ! grep -qx "$PG_SOURCE_VERSION" <<<"$offered"; then
    . /etc/os-release
    if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "== adding deb-src for $VERSION_CODENAME (/etc/apt/sources.list.d/walgo-deb-src.sources)"
      as_root tee /etc/apt/sources.list.d/walgo-deb-src.sources >/dev/null <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $VERSION_CODENAME $VERSION_CODENAME-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $VERSION_CODENAME-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt_updated=
    apt_update
    offered=$(source_versions)
    if ! grep -qx "$PG_SOURCE_VERSION" <<<"$offered"; then
      echo "apt offers no source package $pkg=$PG_SOURCE_VERSION (it offers: $(echo $offered))" >&2
      echo "set PG_SOURCE_VERSION in scripts/versions to one of them" >&2
      exit 1
    fi
  fi
  echo "== downloading the $pkg $PG_SOURCE_VERSION source package"
  mkdir -p "$cache"
  (cd "$cache" && apt-get source --download-only -qq "$pkg=$PG_SOURCE_VERSION" 2>&1 | grep -v 'unsandboxed as root' || true)
  [ -s "$tarball" ] || { echo "apt-get source gave no $tarball" >&2; exit 1; }
fi

work=$(mktemp -d /tmp/walgo-pgtap.XXXXXX)
chmod 755 "$work"
echo "== PostgreSQL $upstream recovery tests with walgo in $work"
tar -xjf "$tarball" -C "$work" --strip-components=1 \
  "postgresql-$upstream/src/test/recovery" "postgresql-$upstream/src/test/perl"
git -C "$work" apply "$repo/test/pgtap/recovery.patch"
cp -r test/pgtap "$work/pgtap"
go build -o "$work/bin/walgo" ./cmd/walgo

user_run=()
if [ "$(id -u)" = 0 ]; then
  chown -R postgres:postgres "$work"
  user_run=(runuser -u postgres --)
fi

cd "$work/src/test/recovery"
status=0
# env -i: no WALGO_* or PG* setting of the caller reaches the tests.
"${user_run[@]}" env -i \
  PATH="$bindir:/usr/local/bin:/usr/bin:/bin" \
  LANG=C.UTF-8 \
  TESTDIR="$PWD" \
  PG_REGRESS="$pg_regress" \
  WALGO_TEST_BIN="$work/bin/walgo" \
  HOME="$work" \
  ${PG_TEST_NOCLEAN:+PG_TEST_NOCLEAN=1} \
  prove --timer --exec "perl -I ../perl -I . -I $work/pgtap -MPostgreSQL::Test::Walgo" \
  "${tests[@]}" 2>&1 | tee "$work/prove.out" || status=$?

# A test that ran without the override would have passed with cp.
for t in "${tests[@]}"; do
  for d in "${default_tests[@]}"; do
    [ "$t" = "$d" ] || continue
    log=tmp_check/log/regress_log_$(basename "$t" .pl)
    if ! grep -qs 'with walgo for node' "$log"; then
      echo "$t did not run with walgo (no \"with walgo\" line in $log)" >&2
      status=1
    fi
  done
done

# walgo writes to stderr, i.e. into the servers' logs. A Go crash there is a
# walgo defect even when the test passed; its error lines are listed.
if grep -lE '^(panic: |fatal error: )' tmp_check/log/*.log 2>/dev/null; then
  echo "walgo crashed in the servers' logs above" >&2
  status=1
fi
if errs=$(grep -hE '^walgo: ' tmp_check/log/*.log 2>/dev/null | sort | uniq -c | sort -rn); [ -n "$errs" ]; then
  echo "== walgo's error lines in the servers' logs (count, message)"
  echo "$errs" | head -n 20
fi

if [ "$status" != 0 ]; then
  # prove's summary names each failed test: show the end of its log.
  for t in $(sed -n 's/^\(t\/[^ ]*\.pl\) .*(Wstat.*/\1/p' "$work/prove.out"); do
    log=tmp_check/log/regress_log_$(basename "$t" .pl)
    echo "== $log (last 60 lines; the servers' logs are beside it in $work/src/test/recovery/tmp_check/log)"
    tail -n 60 "$log" || true
  done
  echo "PostgreSQL recovery tests failed; their folder is kept: $work" >&2
  exit "$status"
fi
if [ -n "${PG_TEST_NOCLEAN:-}" ]; then
  echo "PG_TEST_NOCLEAN: kept $work"
else
  cd "$repo"
  rm -rf "$work"
fi
