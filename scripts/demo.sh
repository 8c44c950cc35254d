#!/usr/bin/env bash
# walgo's main job, end to end, on the embedded default: a throwaway local
# Postgres archives its WAL through `walgo wal-push` into file storage under
# ./walgo-demo while pgbench loads it, and `walgo backup-push` takes a base
# backup; `walgo wal-list` shows the archive and `walgo wal-fetch` brings a
# segment back, which pg_waldump reads; then `walgo backup-fetch` restores
# the latest state into a new directory, Postgres replays the archive there,
# and the data is compared with the source.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing PostgreSQL (Debian package)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

DEMO="$PWD/walgo-demo"
# Postgres refuses to run as root: as root, run it as the postgres user.
if [ "$(id -u)" = 0 ]; then PGUSER_OS=postgres; run() { runuser -u postgres -- "$@"; }; else PGUSER_OS=$(id -un); run() { "$@"; }; fi

if [ -f "$DEMO/data/postmaster.pid" ]; then run "$PGBIN/pg_ctl" -D "$DEMO/data" stop -m immediate >/dev/null 2>&1 || true; fi
rm -rf "$DEMO"
mkdir -p "$DEMO/bin"
echo "== building walgo"
go build -o "$DEMO/bin/walgo" ./cmd/walgo
chown -R "$PGUSER_OS" "$DEMO"
chmod 755 "$DEMO"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 54329)
WALGO="$DEMO/bin/walgo"
cat > "$DEMO/walgo.conf" <<CONF
# Read by: walgo --config $DEMO/walgo.conf
WALGO_STORAGE=file://$DEMO/repo
WALGO_COMPRESSION=zstd
CONF
export WALGO_CONFIG="$DEMO/walgo.conf"
echo "== walgo init (creates the repository once; nothing else creates one)"
run "$WALGO" --config "$DEMO/walgo.conf" init

echo "== initdb and start Postgres on 127.0.0.1:$PORT"
run "$PGBIN/initdb" -D "$DEMO/data" -U postgres --auth=trust -k >/dev/null
cat >> "$DEMO/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DEMO'
archive_mode = on
archive_command = '$WALGO --config $DEMO/walgo.conf wal-push %p'
CONF
stop_pg() { run "$PGBIN/pg_ctl" -D "$DEMO/data" stop -m fast >/dev/null 2>&1 || true; }
trap stop_pg EXIT
run "$PGBIN/pg_ctl" -D "$DEMO/data" -l "$DEMO/postgres.log" -w start >/dev/null

psql_() { run "$PGBIN/psql" -XAtq -h 127.0.0.1 -p "$PORT" -U postgres -c "$1"; }
echo "== pgbench load"
run "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -s 10 -q postgres 2>&1 | tail -n 1
echo "== walgo backup-push (while archiving)"
run env WALGO_CONFIG="$DEMO/walgo.conf" PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER=postgres WALGO_DISK_RATE_LIMIT=50MB "$WALGO" backup-push 2>&1 | grep -E "backup (started|finished)" | sed 's/^.*walgo	//'
run "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -c 4 -T 15 postgres 2>/dev/null | grep -E "^tps|transactions actually"
psql_ "create table demo(x int)"
for _ in 1 2 3; do psql_ "select pg_switch_wal()" >/dev/null; psql_ "insert into demo select 1" ; done
LAST=$(psql_ "select pg_walfile_name(pg_switch_wal())")
echo "== waiting for $LAST to be archived"
for _ in $(seq 1 120); do
  [ "$(psql_ "select coalesce(last_archived_wal,'') >= '$LAST' from pg_stat_archiver")" = t ] && break
  sleep 1
done
psql_ "select 'archived: ' || archived_count || ', failed: ' || failed_count from pg_stat_archiver"

echo "== walgo wal-list"
"$WALGO" wal-list

echo "== walgo wal-fetch $LAST (as restore_command would)"
mkdir -p "$DEMO/fetched"
"$WALGO" wal-fetch "$LAST" "$DEMO/fetched/$LAST"
ls -l "$DEMO/fetched/$LAST"
echo "== pg_waldump reads the fetched segment:"
"$PGBIN/pg_waldump" "$DEMO/fetched/$LAST" 2>&1 | tail -n 2
echo "== walgo backup-list"
"$WALGO" backup-list
WANT=$(psql_ "select sum(abalance) || '/' || count(*) from pgbench_accounts")
echo "== walgo backup-fetch LATEST into $DEMO/restored, then Postgres replays the archive"
"$WALGO" backup-fetch "$DEMO/restored" LATEST 2>&1 | tail -n 1 | sed 's/^.*walgo	//'
chown -R "$PGUSER_OS" "$DEMO/restored"
PORT2=$((PORT + 1))
cat >> "$DEMO/restored/postgresql.auto.conf" <<CONF
port = $PORT2
archive_mode = off
CONF
stop_all() { run "$PGBIN/pg_ctl" -D "$DEMO/restored" stop -m fast >/dev/null 2>&1 || true; stop_pg; }
trap stop_all EXIT
run "$PGBIN/pg_ctl" -D "$DEMO/restored" -l "$DEMO/restored.log" -w -t 300 start >/dev/null
for _ in $(seq 1 120); do
  [ "$(run "$PGBIN/psql" -XAtq -h 127.0.0.1 -p "$PORT2" -U postgres -c "select pg_is_in_recovery()" 2>/dev/null)" = f ] && break
  sleep 1
done
GOT=$(run "$PGBIN/psql" -XAtq -h 127.0.0.1 -p "$PORT2" -U postgres -c "select sum(abalance) || '/' || count(*) from pgbench_accounts")
echo "source:   sum(abalance)/rows = $WANT"
echo "restored: sum(abalance)/rows = $GOT"
if [ "$GOT" != "$WANT" ]; then echo "MISMATCH"; exit 1; fi
echo
echo "Demo done: the restored cluster matches. Archive: $DEMO/repo (file storage); logs: $DEMO/postgres.log, $DEMO/restored.log"
