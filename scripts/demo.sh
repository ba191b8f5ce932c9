#!/usr/bin/env bash
# The main job end to end on the embedded default: a throwaway PostgreSQL cluster archives its WAL
# through `walrs push` into a file-system repository; `walrs basebackup` takes a base backup over
# the replication protocol; transactions are written; `walrs restore --target-time` plans the
# recovery (backup, timeline path, WAL range), restores the data directory and writes the recovery
# settings; PostgreSQL recovers to the point in time between two of the transactions, every WAL
# segment coming back through `walrs fetch`; the restored rows are shown. `walrs status` shows
# the repository's recoverable window before the restore, `walrs expire --explain` what retention
# would keep, and `walrs drill` proves the same target again in a scratch directory. A logical
# dump (`walrs dump`) of the database lands in the same repository.
#
# Usage: scripts/demo.sh            (as root: PostgreSQL runs as the 'postgres' user)
# Needs PostgreSQL 15 server binaries (scripts/install-prereqs.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

PGBIN=${WALRS_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}
[[ -x $PGBIN/initdb ]] || ./scripts/install-prereqs.sh
echo "== building walrs (release)"
cargo build --release --quiet
WORK=$(mktemp -d /tmp/walrs-demo.XXXXXX)
trap 'for d in "$WORK"/a "$WORK"/b; do [[ -f $d/postmaster.pid ]] && $AS "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1; done; rm -rf "$WORK"' EXIT
install -m 0755 target/release/walrs "$WORK/walrs"
mkdir -p "$WORK/repo" "$WORK/s"
if [[ $(id -u) == 0 ]]; then
  chown -R postgres:postgres "$WORK"; AS="runuser -u postgres --"
else
  AS=""
fi
chmod 0755 "$WORK"
PSQL() { "$PGBIN/psql" -X -A -t -q -h "$WORK/s" -p 5432 -U postgres -d postgres "$@"; }

echo "== initdb and start a cluster archiving through walrs into $WORK/repo"
$AS "$PGBIN/initdb" -D "$WORK/a" -U postgres -A trust --locale=C.UTF-8 --no-sync >/dev/null
{
  echo "listen_addresses = ''"
  echo "unix_socket_directories = '$WORK/s'"
  echo "port = 5432"
  sed -e "s#@WALRS@#$WORK/walrs#g" -e "s#@REPO@#$WORK/repo#g" pgconf-templates/archive.conf
} | $AS tee -a "$WORK/a/postgresql.conf" >/dev/null
$AS "$PGBIN/pg_ctl" -D "$WORK/a" -l "$WORK/a.log" -w start >/dev/null

echo "== walrs basebackup (replication protocol, into the repository)"
PSQL -c "CREATE TABLE orders (id int PRIMARY KEY, item text, at timestamptz DEFAULT clock_timestamp())"
PSQL -c "INSERT INTO orders (id, item) VALUES (1, 'before the backup')"
export WALRS_REPO="$WORK/repo"
BACKUP=$($AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" basebackup -d "host=$WORK/s port=5432 user=postgres")
echo "   backup $BACKUP"
$AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" backup list | sed 's/^/   /'

echo "== writing after the backup (40 MB of WAL, then two marked transactions)"
PSQL -c "CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 400000) g"
PSQL -c "INSERT INTO orders (id, item) VALUES (2, 'kept: committed before the target')"
sleep 1.2
TARGET=$(PSQL -c "SELECT clock_timestamp()")
sleep 1.2
PSQL -c "INSERT INTO orders (id, item) VALUES (3, 'dropped: committed after the target')"
LAST=$(PSQL -c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 300); do
  [[ "$(PSQL -c "SELECT coalesce(last_archived_wal,'') >= '$LAST' FROM pg_stat_archiver")" == t ]] && break
  sleep 0.2
done
PSQL -c "SELECT 'archived by walrs: ' || archived_count || ' files, failed: ' || failed_count FROM pg_stat_archiver"
echo "   target time: $TARGET"
echo "== walrs dump (a consistent logical dump into the same repository: pg_dump's schema, walrs's parallel COPY) and walrs dump list"
DUMP=$($AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" dump -d "host=$WORK/s port=5432 user=postgres dbname=postgres" --pg-dump-bin "$PGBIN/pg_dump")
echo "   dump $DUMP"
$AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" dump list | sed 's/^/   /'
$AS "$PGBIN/pg_ctl" -D "$WORK/a" -m fast -w stop >/dev/null

echo "== the repository: walrs wal list (from the index push builds) and walrs timeline"
$AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" wal list | sed 's/^/   /'
echo "   $(find "$WORK/repo" -type f | wc -l) objects, $(du -sh "$WORK/repo" | cut -f1) stored"
echo "== walrs status (the recoverable window, the last archived segment, the backups; from the index)"
$AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" status | sed 's/^/   /'
echo "== walrs expire --retain-full 1 --explain (a dry run: what retention keeps, and why)"
$AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" expire --retain-full 1 --explain | sed 's/^/   /'

echo "== walrs restore --target-time '$TARGET' (plan, restore, recovery settings)"
$AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" restore --pgdata "$WORK/b" --target-time "$TARGET" | sed 's/^/   /'
$AS tee -a "$WORK/b/postgresql.auto.conf" >/dev/null <<CONF
port = 5432
archive_mode = off
CONF
echo "== starting PostgreSQL on the restored directory"
$AS "$PGBIN/pg_ctl" -D "$WORK/b" -l "$WORK/b.log" -w start >/dev/null
for _ in $(seq 1 300); do
  [[ "$(PSQL -c "SELECT pg_is_in_recovery()")" == f ]] && break
  sleep 0.2
done
echo "   $(grep -c 'restored log file' "$WORK/b.log") WAL files restored by walrs fetch; $(grep -o 'recovery stopping before commit.*' "$WORK/b.log" | head -1)"
echo "== the restored orders table (row 3 was committed after the target and is gone)"
PSQL -c "SELECT id, item FROM orders ORDER BY id" | sed 's/^/   /'
ROWS=$(PSQL -c "SELECT string_agg(id::text, ',' ORDER BY id) FROM orders")
$AS "$PGBIN/pg_ctl" -D "$WORK/b" -m fast -w stop >/dev/null
echo "== walrs drill --target-time '$TARGET' (a restore drill: scratch restore, recovery on a private socket, every table read back, the result recorded)"
$AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" drill --target-time "$TARGET" --scratch-dir "$WORK" | sed 's/^/   /'
$AS env WALRS_REPO="$WORK/repo" "$WORK/walrs" status | grep 'last drill' | sed 's/^/   /'
if [[ $ROWS == "1,2" ]]; then echo "== OK: restored exactly to the target"; else echo "== FAILED: rows $ROWS"; exit 1; fi
