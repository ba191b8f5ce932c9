#!/usr/bin/env bash
# Logical dump and load of a pgbench database, side by side in one run: `walrs dump --jobs 2`
# into a file-system repository against `pg_dump -Fd -j2` (default compression) and
# `pg_dump -Fd -j2 -Z0`; then `walrs load --jobs 2` against `pg_restore -j2` of pg_dump's
# directory, each into a new database. Wall time (medians of ROUNDS), stored size, peak RSS (GNU
# time %M: the largest process of the tree). The machine may be shared: say so with the figures.
#
#   sudo benches/dump.sh                     # SCALE=30 (~450 MB database), ROUNDS=3
#   WALRS_BIN=/path/to/walrs SCALE=60 ROUNDS=2 benches/dump.sh
#
# Knobs: SCALE (30; pgbench -i -s SCALE, ~15 MB per unit), ROUNDS (3), PG_PORT (5495),
#        SPLIT (1GiB: walrs dump --split-size), KEEP=1 keeps the temp dir.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCALE=${SCALE:-30}
ROUNDS=${ROUNDS:-3}
PG_PORT=${PG_PORT:-5495}
SPLIT=${SPLIT:-1GiB}
need_root
[[ -x /usr/bin/time ]] || apt_need /usr/bin/time time || die "GNU time is needed"
make_workdir walrs-dump-bench
cleanup_all() {
    pg_stop "$WORK/data" immediate
    [[ ${KEEP:-0} == 1 ]] && { log "kept $WORK"; return; }
    rm -rf "$WORK"
}
trap cleanup_all EXIT
install_walrs "$WORK/walrs"
PG_SOCK=$WORK/sock
pg_init "$WORK/data" "$PG_SOCK" "$PG_PORT" "max_wal_size = 4GB" "checkpoint_timeout = 1h"
pg_start "$WORK/data"
log "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -i -q -s "$SCALE" -h "$PG_SOCK" -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
psql_q "CHECKPOINT" >/dev/null
DB_MB=$(psql_q "SELECT pg_database_size('postgres') / 1048576")
CONN="host=$PG_SOCK port=$PG_PORT user=postgres"
REPO=$WORK/repo
install -d -o "$PG_USER" "$REPO"

# run NAME CMD...: one timed run as postgres; appends "NAME seconds rss_kb" to $WORK/results.
run() {
    local name=$1; shift
    sync; nap 2
    local t0=$EPOCHREALTIME
    as_pg /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; die "$name failed"; }
    local t1=$EPOCHREALTIME
    echo "$name $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}') $(tail -1 "$WORK/rss")" >>"$WORK/results"
}

: >"$WORK/results"
for r in $(seq "$ROUNDS"); do
    log "round $r: dumps"
    run walrs-dump env WALRS_REPO="$REPO" WALRS_PG_DUMP_BIN="$PGBIN/pg_dump" "$WORK/walrs" dump -d "$CONN dbname=postgres" --jobs 2 --split-size "$SPLIT"
    ID=$(cat "$WORK/out")
    rm -rf "$WORK/pgd" "$WORK/pgd0"
    run pg_dump-Fd-j2 "$PGBIN/pg_dump" -Fd -j2 -f "$WORK/pgd" -d "$CONN dbname=postgres"
    run pg_dump-Fd-j2-Z0 "$PGBIN/pg_dump" -Fd -j2 -Z0 -f "$WORK/pgd0" -d "$CONN dbname=postgres"
    log "round $r: loads"
    psql_q "DROP DATABASE IF EXISTS l1" >/dev/null; psql_q "CREATE DATABASE l1" >/dev/null
    run walrs-load env WALRS_REPO="$REPO" WALRS_PG_RESTORE_BIN="$PGBIN/pg_restore" "$WORK/walrs" load "$ID" -d "$CONN dbname=l1" --jobs 2
    psql_q "DROP DATABASE IF EXISTS l2" >/dev/null; psql_q "CREATE DATABASE l2" >/dev/null
    run pg_restore-j2 "$PGBIN/pg_restore" -j2 -d "$CONN dbname=l2" "$WORK/pgd"
done
WALRS_STORED=$(du -sb "$REPO/dumps/$ID" | cut -f1)
PGD_STORED=$(du -sb "$WORK/pgd" | cut -f1)
PGD0_STORED=$(du -sb "$WORK/pgd0" | cut -f1)
ROWS1=$("$PGBIN/psql" -X -At -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d l1 -c "SELECT count(*) FROM pgbench_accounts")
ROWS2=$("$PGBIN/psql" -X -At -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d l2 -c "SELECT count(*) FROM pgbench_accounts")

echo "# dump/load bench: pgbench scale $SCALE, database $DB_MB MiB, $ROUNDS round(s), $(date -u +%FT%TZ)"
echo "# $(machine_line); load average at the end: $(load_now)"
echo "# $WALRS_VERSION; $("$PGBIN/pg_dump" --version)"
printf '%-18s %10s %14s %12s\n' contender "median s" "(min..max)" "peak RSS MB"
for n in walrs-dump pg_dump-Fd-j2 pg_dump-Fd-j2-Z0 walrs-load pg_restore-j2; do
    med=$(awk -v n="$n" '$1==n{print $2}' "$WORK/results" | median)
    mm=$(awk -v n="$n" '$1==n{print $2}' "$WORK/results" | minmax)
    rss=$(awk -v n="$n" '$1==n{print $3}' "$WORK/results" | sort -n | tail -1)
    printf '%-18s %10.2f %14s %12d\n' "$n" "$med" "($mm)" "$((rss / 1024))"
done
echo "stored: walrs $((WALRS_STORED / 1048576)) MiB, pg_dump -Fd $((PGD_STORED / 1048576)) MiB, pg_dump -Fd -Z0 $((PGD0_STORED / 1048576)) MiB"
echo "loaded rows (pgbench_accounts): walrs $ROWS1, pg_restore $ROWS2"
