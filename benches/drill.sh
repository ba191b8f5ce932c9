#!/usr/bin/env bash
# The cost of a restore drill (issue 17): `walrs drill` on a pgbench database of a few GB, its RTO
# split into restore, recovery and checks as the drill records it, against the same restore done
# by hand: `walrs restore` alone, then PostgreSQL started on the result until it has promoted.
# The drill should add only its checks. Side by side in one run, the two alternating.
#
#   sudo benches/drill.sh                  # SCALE=200 (~3 GB), ROUNDS=3: ~8 min here
#   SCALE=50 ROUNDS=2 benches/drill.sh     # ~0.8 GB: ~3 min
#   WALRS_BIN=/path/to/walrs   (skip `cargo build --release`)    KEEP=1 (keep the temp dir)
#
# Knobs:
#   SCALE (200)     pgbench -i -s SCALE: 200 = 3.0 GB (pgbench_accounts 2.6 GB + its pkey)
#   ROUNDS (3)      rounds; each runs the manual restore and the drill, alternating which is first
#   TX_SECS (20)    seconds of `pgbench -c 2 -T` after the base backup: the WAL recovery replays
#   SETTLE (3)      seconds of `sync` + sleep before each timed command
#   PG_PORT (5494)  the source cluster; the manual restore's server uses PG_PORT+1 (socket only)
#
# Setup: one PG15 cluster (initdb as `postgres`, data checksums on, socket-only in /tmp, fsync
# on, archive_command `walrs push %p` into a file-system repository), pgbench -i -s SCALE,
# `walrs basebackup`, TX_SECS of pgbench transactions, pg_switch_wal, and the archiver caught up.
# Every drill and restore then targets the end of the archive from that one backup.
#
# Timing: "manual restore" is the wall time of `walrs restore --pgdata D --owner postgres` (run
# as root, as the drill is); "manual recovery" the wall time from `postgres -D D` (started as
# postgres on a private socket, as the drill starts it) until `pg_is_in_recovery()` is false,
# polled every 0.2 s as the drill polls. The drill's parts come from its record (`--json`):
# rto.restore_seconds, rto.recovery_seconds, rto.checks_seconds, rto.total_seconds; "drill wall"
# is the wall time of the whole command (also the sweep, the record's write, the server's stop
# and the scratch directory's removal). Restored directories are removed untimed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCALE=${SCALE:-200}
ROUNDS=${ROUNDS:-3}
TX_SECS=${TX_SECS:-20}
SETTLE=${SETTLE:-3}
PG_PORT=${PG_PORT:-5494}
R_PORT=$((PG_PORT + 1))

need_root
apt_need jq jq || die "jq is needed"
make_workdir walrs-drill-bench
cleanup_all() {
    [[ -n ${WORK:-} && -d $WORK ]] || return 0
    pg_stop "$WORK/r/data" immediate
    pg_stop "$WORK/pg/data" immediate
    if [[ -n ${KEEP:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup_all EXIT
install -d -m 755 -o "$PG_USER" "$WORK/bin" "$WORK/repo" "$WORK/scratch" "$WORK/r"
install_walrs "$WORK/bin/walrs"
W=$WORK/bin/walrs
REPO=$WORK/repo
export WALRS_REPO=$REPO
log "walrs: $WALRS_VERSION"
log "machine: $(machine_line)"

PG_SOCK=$WORK/pg/sock
mkdir -p "$WORK/pg" && chown "$PG_USER:" "$WORK/pg"
pg_init "$WORK/pg/data" "$PG_SOCK" "$PG_PORT" \
    "archive_mode = on" "archive_command = 'WALRS_REPO=$REPO $W push %p'" \
    "max_wal_size = 4GB" "shared_buffers = 256MB"
as_pg "$PGBIN/pg_checksums" --enable -D "$WORK/pg/data" >/dev/null
pg_start "$WORK/pg/data"

wait_archived() {
    local last
    last=$(psql_q "SELECT pg_walfile_name(pg_current_wal_lsn())")
    psql_q "SELECT pg_switch_wal()" >/dev/null
    until [[ "$(psql_q "SELECT last_archived_wal FROM pg_stat_archiver")" > "$last" ]] \
        || [[ "$(psql_q "SELECT last_archived_wal FROM pg_stat_archiver")" == "$last" ]]; do
        nap 0.5
    done
}

log "pgbench -i -s $SCALE"
t=$EPOCHREALTIME
"$PGBIN/pgbench" -i -q -s "$SCALE" -h "$PG_SOCK" -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
psql_q "CHECKPOINT" >/dev/null
wait_archived
log "  $(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $t}") s; database $(psql_q "SELECT pg_size_pretty(pg_database_size('postgres'))")"
log "walrs basebackup"
BACKUP=$(as_pg env WALRS_REPO="$REPO" "$W" basebackup -d "host=$PG_SOCK port=$PG_PORT user=postgres" 2>/dev/null)
log "  backup $BACKUP"
log "pgbench -c 2 -T $TX_SECS (the WAL to replay)"
"$PGBIN/pgbench" -c 2 -T "$TX_SECS" -h "$PG_SOCK" -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1
wait_archived
PLAN=$("$W" restore --dry-run --json --pgdata "$WORK/unused")
log "  plan: $(jq -r '"\(.wal_files | length) segment(s), \(.bytes / 1048576 | floor) MiB"' <<<"$PLAN") to restore"
pg_stop "$WORK/pg/data"   # nothing else competes for the disk and CPU

settle() { sync; nap "$SETTLE"; }
secs_since() { awk "BEGIN{printf \"%.2f\", $EPOCHREALTIME - $1}"; }

manual() {
    local d=$WORK/r/data t
    settle
    t=$EPOCHREALTIME
    "$W" restore --pgdata "$d" --owner "$PG_USER" >/dev/null 2>&1 || die "walrs restore failed"
    local restore_s; restore_s=$(secs_since "$t")
    install -d -m 700 -o "$PG_USER" "$WORK/r/sock"
    t=$EPOCHREALTIME
    as_pg env LC_ALL=C "$PGBIN/postgres" -D "$d" -c listen_addresses= -c port="$R_PORT" \
        -c unix_socket_directories="$WORK/r/sock" -c archive_mode=off >"$WORK/r/server.log" 2>&1 &
    local pid=$!
    until [[ "$("$PGBIN/psql" -X -At -h "$WORK/r/sock" -p "$R_PORT" -U postgres -d postgres \
        -c "SELECT pg_is_in_recovery()" 2>/dev/null)" == f ]]; do
        kill -0 "$pid" 2>/dev/null || die "manual recovery: the server exited ($(tail -3 "$WORK/r/server.log"))"
        nap 0.2
    done
    local recovery_s; recovery_s=$(secs_since "$t")
    as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null
    wait "$pid" || true
    rm -rf "$d" "$WORK/r/sock"
    echo "$restore_s $recovery_s" >>"$WORK/manual.txt"
    log "  manual: restore $restore_s s, recovery $recovery_s s"
}

drill() {
    local t out
    settle
    t=$EPOCHREALTIME
    out=$("$W" drill --scratch-dir "$WORK/scratch" --json 2>"$WORK/drill.err") \
        || die "walrs drill failed: $(jq -r '.error' <<<"$out") $(tail -3 "$WORK/drill.err")"
    local wall; wall=$(secs_since "$t")
    jq -r --arg wall "$wall" '"\(.rto.restore_seconds) \(.rto.recovery_seconds) \(.rto.checks_seconds) \(.rto.total_seconds) \($wall) \(.checks.relations_read) \(.checks.bytes_read) \(.checks.indexes_checked) \(.segments_replayed)"' <<<"$out" >>"$WORK/drill.txt"
    log "  drill: $(tail -1 "$WORK/drill.txt" | awk '{printf "restore %s s, recovery %s s, checks %s s, RTO %s s, wall %s s", $1, $2, $3, $4, $5}')"
}

for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS (load $(load_now))"
    if ((r % 2)); then manual; drill; else drill; manual; fi
done

col() { awk -v c="$2" '{print $c}' "$1"; }
fmt() { awk '{printf "%.2f\n", $1}'; }
stat() { printf '%s (%s)' "$(col "$1" "$2" | fmt | median | fmt)" "$(col "$1" "$2" | fmt | minmax)"; }
echo
echo "## walrs drill vs. walrs restore + start, SCALE=$SCALE, $ROUNDS round(s), medians (min..max), seconds"
echo "walrs: $WALRS_VERSION; $(machine_line); load at the end $(load_now)"
echo
echo "| part | walrs restore + start by hand | walrs drill (its record) |"
echo "|---|---|---|"
echo "| restore | $(stat "$WORK/manual.txt" 1) | $(stat "$WORK/drill.txt" 1) |"
echo "| recovery (start to promotion) | $(stat "$WORK/manual.txt" 2) | $(stat "$WORK/drill.txt" 2) |"
echo "| checks | - | $(stat "$WORK/drill.txt" 3) |"
echo "| RTO (sum) | $(awk '{print $1 + $2}' "$WORK/manual.txt" | median | fmt) | $(stat "$WORK/drill.txt" 4) |"
echo "| wall time of the command | - | $(stat "$WORK/drill.txt" 5) |"
echo
echo "checks: $(col "$WORK/drill.txt" 6 | median) relation(s) read, $(col "$WORK/drill.txt" 7 | median | awk '{printf "%d", $1 / 1048576}') MiB as COPY text, $(col "$WORK/drill.txt" 8 | median) B-tree index(es) checked; $(col "$WORK/drill.txt" 9 | median) WAL segment(s) restored by recovery"
