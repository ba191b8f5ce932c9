#!/usr/bin/env bash
# Base backup and restore of a pgbench database of a few GB: `walrs basebackup` into a file-system
# repository against `pg_basebackup -Ft -X none` with the same codec (zstd level 1) and against
# `pgbackrest backup --type=full` (process-max=2, zst level 1); then `walrs restore` against
# `pgbackrest restore` (process-max=2) into an empty directory. Peak RSS of every command, and of
# walrs at a second, smaller database size (is memory flat?). Everything is measured side by side
# in one run, the contenders alternating.
#
#   sudo benches/basebackup.sh                  # SCALE=200 (~3 GB), ROUNDS=3: ~5-6 min here
#   SCALE=100 ROUNDS=2 benches/basebackup.sh    # ~1.5 GB: ~3.5 min
#   WALRS_BIN=/path/to/walrs   (skip `cargo build --release`)    KEEP=1 (keep the temp dir)
#
# Knobs:
#   SCALE (200)           pgbench -i -s SCALE: 200 = 3.0 GB (pgbench_accounts 2.6 GB + its pkey)
#   SMALL_SCALE (SCALE/4) second database size for the walrs peak-RSS comparison (0 skips it)
#   ROUNDS (3)            rounds of backups, then rounds of restores
#   PGBB_MODES ("client pipe client-w2 null")   pg_basebackup variants, zstd level 1 and durable
#                  except the reference `null`:
#       client     pg_basebackup -D DIR -Ft -X none -c fast --compress=client-zstd:1
#                  (one process compresses; pg_basebackup fsyncs its output itself)
#       pipe       pg_basebackup -D - -Ft -X none -c fast | zstd -1 -q > FILE && sync FILE
#                  (two processes: receiving and compressing overlap)
#       client-w2  as client, --compress=client-zstd:level=1,workers=2 (libzstd's threads)
#       null       reference, not a contender: pg_basebackup -D - -Ft -X none -c fast > /dev/null
#                  (no compression, nothing written: how fast the server alone sends the backup)
#   PGBACKREST (1)        0: no pgBackRest rows
#   RESTORE_MODES ("walrs walrs-j2 pgbr")  walrs: walrs restore (its default --jobs 4);
#                  walrs-j2: walrs restore --jobs 2; pgbr: pgbackrest restore (process-max=2)
#   VERIFY (1)            start each tool's last restore once (not timed) and count the rows
#   BACKUP_VERIFY (1)     `walrs backup verify` of the last walrs backup (not timed)
#   SETTLE (3)            seconds of `sync` + sleep before each timed command
#   PROFILE (0)           1: after the rounds, `perf record -a` (whole machine) over one walrs
#                  basebackup, one pg_basebackup client-zstd:1, one walrs restore and one pgBackRest
#                  restore; prints the CPU share per process and the top symbols (needs perf)
#   PG_PORT (5493)
#
# Setup: one PG15 cluster (initdb as `postgres`, socket-only in /tmp, fsync on, wal_level replica,
# max_wal_size 4GB). archive_command pushes every segment to both repositories:
# `WALRS_REPO=R walrs push %p && pgbackrest --config=F --stanza=bench archive-push %p`, so every
# backup waits for the same archiver at its end (all three wait for their last WAL segment).
# Then pgbench -i -s SCALE, CHECKPOINT, and the script waits until the archiver has caught up.
#
# Timing: wall time with bash $EPOCHREALTIME around the command; user/sys CPU and peak RSS from GNU
# time (`%M` = "Maximum resident set size" of `time -v`: the largest single process of the tree,
# not a sum; server-side processes (walsender, checkpointer, archiver) are not in it).
# "machine CPU s" = busy jiffies of all CPUs (/proc/stat) during the command: server, client and
# anything else running on the machine. "disk MB" = sectors written to the /tmp device during the
# command (/proc/diskstats). Before each timed command: `sync` and SETTLE seconds of sleep.
# Report: medians (min..max) per contender, the targets of issue 5 with a verdict (ratio of the
# medians), then walrs / contender per round and the median of those per-round ratios.
# Every command runs as the `postgres` user. Backups accumulate (none is deleted); restore
# directories are removed after each restore (untimed), except the last of each tool.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCALE=${SCALE:-200}
SMALL_SCALE=${SMALL_SCALE:-$((SCALE / 4))}
ROUNDS=${ROUNDS:-3}
PGBB_MODES=${PGBB_MODES:-client pipe client-w2 null}
RESTORE_MODES=${RESTORE_MODES:-walrs walrs-j2 pgbr}
PROFILE=${PROFILE:-0}
VERIFY=${VERIFY:-1}
BACKUP_VERIFY=${BACKUP_VERIFY:-1}
SETTLE=${SETTLE:-3}
PG_PORT=${PG_PORT:-5493}

need_root
apt_need /usr/bin/time time || die "cannot install time"
apt_need zstd zstd || die "cannot install zstd"
PGBR=
if [[ ${PGBACKREST:-1} == 1 ]] && apt_need pgbackrest pgbackrest; then PGBR=1; else log "pgBackRest unavailable: no peer rows"; fi

LOAD_START=$(load_now)
T_START=$(date -u +%H:%M)
make_workdir walrs-bb
PG_SOCK=$WORK/s
DATA=$WORK/data
cleanup() {
    local rc=$?
    local d
    for d in "$DATA" "$WORK/data-small" "$WORK"/rst/*; do
        [[ -f $d/postmaster.pid ]] && pg_stop "$d" immediate
    done
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT

install -d -m 755 "$WORK/bin"
install_walrs "$WORK/bin/walrs"
W=$WORK/bin/walrs
log "walrs: $WALRS_VERSION"
PG_VERSION=$("$PGBIN/postgres" --version | awk '{print $3}')
PGBB=$PGBIN/pg_basebackup
CONN="host=$PG_SOCK port=$PG_PORT user=postgres"
for d in repo pgbb rst t pgbr pgbr/repo pgbr/log pgbr/lock pgbr/spool; do install -d -m 755 -o "$PG_USER" "$WORK/$d"; done
REPO=$WORK/repo

# --- the cluster and its archive -------------------------------------------------------------
PGBR_CONF=$WORK/pgbr/pgbackrest.conf
AC="WALRS_REPO=$REPO $W push %p"
if [[ -n $PGBR ]]; then
    printf '%s\n' "[global]" "repo1-path=$WORK/pgbr/repo" "log-path=$WORK/pgbr/log" "lock-path=$WORK/pgbr/lock" \
        "spool-path=$WORK/pgbr/spool" "compress-type=zst" "compress-level=1" "process-max=2" "start-fast=y" \
        "repo1-retention-full=99" "log-level-console=warn" "log-level-file=info" "" \
        "[bench]" "pg1-path=$DATA" "pg1-port=$PG_PORT" "pg1-socket-path=$PG_SOCK" "pg1-user=postgres" >"$PGBR_CONF"
    chown "$PG_USER" "$PGBR_CONF"
    AC="$AC && pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p"
fi
pg_init "$DATA" "$PG_SOCK" "$PG_PORT" "archive_mode = on" "archive_command = '$AC'" \
    "max_wal_size = 4GB" "checkpoint_timeout = 30min" "max_replication_slots = 10"
pg_start "$DATA"
pgbr() { as_pg pgbackrest --config="$PGBR_CONF" --stanza=bench "$@"; }
[[ -z $PGBR ]] || pgbr stanza-create >/dev/null || die "pgbackrest stanza-create failed"

# wait_archived: switch WAL, wait until the archiver has stored the current segment
wait_archived() {
    local last i
    last=$(psql_q "SELECT pg_walfile_name(pg_switch_wal())")
    for ((i = 0; i < 6000; i++)); do
        [[ $(psql_q "SELECT coalesce(last_archived_wal,'') >= '$last' FROM pg_stat_archiver") == t ]] && return 0
        nap 0.2
    done
    die "WAL $last was not archived within 20 min"
}
load_db() { # scale
    log "pgbench -i -s $1"
    local s=${EPOCHREALTIME/./}
    "$PGBIN/pgbench" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -i -q -s "$1" postgres >"$WORK/pgbench.log" 2>&1 \
        || { cat "$WORK/pgbench.log"; die "pgbench -i failed"; }
    psql_q "CHECKPOINT" >/dev/null
    wait_archived
    LOAD_SECONDS=$(awk -v a="$s" -v b="${EPOCHREALTIME/./}" 'BEGIN{printf "%.0f", (b-a)/1e6}')
}
load_db "$SCALE"
DB_BYTES=$(psql_q "SELECT pg_database_size('postgres')")
DATA_BYTES=$(du -sb "$DATA" | cut -f1)
BASE_BYTES=$((DATA_BYTES - $(du -sb "$DATA/pg_wal" | cut -f1))) # what a backup holds (-X none)
ARCH=$(psql_q "SELECT archived_count || ' archived, ' || failed_count || ' failed' FROM pg_stat_archiver")
log "database $((DB_BYTES >> 20)) MiB, data directory $((DATA_BYTES >> 20)) MiB ($((BASE_BYTES >> 20)) MiB without pg_wal); loaded and archived in ${LOAD_SECONDS} s ($ARCH)"
ROWS_WANT=$((SCALE * 100000))

# --- measurement helpers -----------------------------------------------------------------------
RES=$WORK/results.tsv # phase, contender, round, wall s, user s, sys s, rss KiB, machine cpu s, disk MB, steal s, load1, size bytes
: >"$RES"
DISKDEV=$(basename "$(findmnt -n -o SOURCE -T /tmp)")
cpu_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
cpu_steal() { awk '/^cpu /{print $9}' /proc/stat; }
disk_sect() { awk -v d="$DISKDEV" '$3==d{print $10}' /proc/diskstats; }
# timed PHASE CONTENDER ROUND cmd...  (as the postgres user, under GNU time)
timed() {
    local ph=$1 c=$2 r=$3; shift 3
    sync; nap "$SETTLE"
    local c0 d0 s e c1 d1 l st0 st1
    l=$(cut -d' ' -f1 /proc/loadavg)
    c0=$(cpu_busy); d0=$(disk_sect); st0=$(cpu_steal)
    s=${EPOCHREALTIME/./}
    as_pg /usr/bin/time -o "$WORK/t/time" -f '%U %S %M' "$@" >"$WORK/t/out" 2>"$WORK/t/err" \
        || { cat "$WORK/t/err" "$WORK/t/time" >&2; die "$ph $c round $r failed"; }
    e=${EPOCHREALTIME/./}
    c1=$(cpu_busy); d1=$(disk_sect); st1=$(cpu_steal)
    local u sy m
    read -r u sy m <"$WORK/t/time"
    LAST=$(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.2f", (b-a)/1e6}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t' "$ph" "$c" "$r" "$LAST" "$u" "$sy" "$m" \
        "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.1f", (b-a)/100}')" \
        "$(awk -v a="$d0" -v b="$d1" 'BEGIN{printf "%.0f", (b-a)*512/1e6}')" \
        "$(awk -v a="$st0" -v b="$st1" 'BEGIN{printf "%.1f", (b-a)/100}')" "$l" >>"$RES"
    log "$ph $c round $r: ${LAST} s wall, user $u s, sys $sy s, peak RSS $((m / 1024)) MiB (load $l)"
}
record_size() { echo "$1" >>"$RES"; } # closes the row opened by timed

# --- backups ---------------------------------------------------------------------------------
BACKUPS=(walrs)
for m in $PGBB_MODES; do BACKUPS+=("pgbb-$m"); done
[[ -n $PGBR ]] && BACKUPS+=(pgbr)
backup() { # contender round
    local c=$1 r=$2 out
    case $c in
        walrs)
            timed backup "$c" "$r" env WALRS_REPO="$REPO" "$W" basebackup -d "$CONN"
            WALRS_LAST=$(tail -1 "$WORK/t/out")
            record_size "$(du -sb "$REPO/backups/$WALRS_LAST" | cut -f1)" ;;
        pgbb-client | pgbb-client-w2)
            out=$WORK/pgbb/$c-$r
            local z=client-zstd:1
            [[ $c == pgbb-client-w2 ]] && z=client-zstd:level=1,workers=2
            timed backup "$c" "$r" "$PGBB" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -D "$out" -Ft -X none -c fast --compress="$z"
            record_size "$(du -sb "$out" | cut -f1)" ;;
        pgbb-pipe)
            out=$WORK/pgbb/$c-$r.tar.zst
            timed backup "$c" "$r" bash -o pipefail -c '"$0" -h "$1" -p "$2" -U postgres -D - -Ft -X none -c fast | zstd -1 -q >"$3" && sync "$3"' \
                "$PGBB" "$PG_SOCK" "$PG_PORT" "$out"
            record_size "$(stat -c %s "$out")" ;;
        pgbb-null)
            timed backup "$c" "$r" bash -o pipefail -c '"$0" -h "$1" -p "$2" -U postgres -D - -Ft -X none -c fast >/dev/null' \
                "$PGBB" "$PG_SOCK" "$PG_PORT"
            record_size 0 ;;
        pgbr)
            timed backup "$c" "$r" pgbackrest --config="$PGBR_CONF" --stanza=bench --type=full backup
            record_size "$(du -sb "$(ls -d "$WORK"/pgbr/repo/backup/bench/*F | tail -1)" | cut -f1)" ;;
    esac
}
log "backups: ${BACKUPS[*]} x $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=("${BACKUPS[@]}"); else order=(); for ((i = ${#BACKUPS[@]} - 1; i >= 0; i--)); do order+=("${BACKUPS[$i]}"); done; fi
    for c in "${order[@]}"; do backup "$c" "$r"; done
done
ARCH_AFTER=$(psql_q "SELECT archived_count || ' archived, ' || failed_count || ' failed' FROM pg_stat_archiver")

# --- restores --------------------------------------------------------------------------------
RESTORES=()
for m in $RESTORE_MODES; do [[ $m == pgbr && -z $PGBR ]] || RESTORES+=("$m"); done
restore() { # contender round
    local c=$1 r=$2 d=$WORK/rst/$1-$2
    install -d -m 700 -o "$PG_USER" "$d"
    case $c in
        walrs) timed restore "$c" "$r" env WALRS_REPO="$REPO" "$W" restore --pgdata "$d" --backup latest --target-immediate ;;
        walrs-j2) timed restore "$c" "$r" env WALRS_REPO="$REPO" "$W" restore --pgdata "$d" --backup latest --target-immediate --jobs 2 ;;
        pgbr) timed restore "$c" "$r" pgbackrest --config="$PGBR_CONF" --stanza=bench --pg1-path="$d" --type=immediate --target-action=promote restore ;;
    esac
    record_size "$(du -sb "$d" | cut -f1)"
    cp "$WORK/t/out" "$WORK/rst/$c.out"
    if ((r < ROUNDS)); then rm -rf "$d"; fi
}
log "restores: ${RESTORES[*]} x $ROUNDS rounds"
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=("${RESTORES[@]}"); else order=(); for ((i = ${#RESTORES[@]} - 1; i >= 0; i--)); do order+=("${RESTORES[$i]}"); done; fi
    for c in "${order[@]}"; do restore "$c" "$r"; done
done

# --- profile (optional, untimed) ------------------------------------------------------------
PROF=$WORK/prof
if [[ $PROFILE == 1 ]]; then
    if command -v perf >/dev/null 2>&1 || apt_need perf linux-perf; then
        install -d -m 755 "$PROF"
        prof() { # name cmd...: perf record of the whole machine while cmd runs as postgres
            local n=$1; shift
            sync; nap "$SETTLE"
            perf record -q -a -F 499 -g -o "$PROF/$n.data" -- runuser -u "$PG_USER" -- "$@" >/dev/null 2>"$PROF/$n.err" \
                || { cat "$PROF/$n.err" >&2; die "profile $n failed"; }
            {
                echo "### $n: CPU share of all samples (both CPUs; swapper = idle)"
                perf report -i "$PROF/$n.data" --no-children -g none --sort comm --stdio 2>/dev/null | grep '%' | head -8 || true
                echo "### $n: top symbols"
                perf report -i "$PROF/$n.data" --no-children -g none --sort comm,dso,sym --stdio 2>/dev/null | grep '%' | head -20 || true
            } >"$PROF/$n.txt"
        }
        log "profiling (perf record -a)"
        prof walrs-basebackup env WALRS_REPO="$REPO" "$W" basebackup -d "$CONN"
        prof pgbb-client "$PGBB" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -D "$WORK/pgbb/profile" -Ft -X none -c fast --compress=client-zstd:1
        [[ -z $PGBR ]] || prof pgbr-backup pgbackrest --config="$PGBR_CONF" --stanza=bench --type=full backup
        install -d -m 700 -o "$PG_USER" "$WORK/rst/prof-walrs"
        prof walrs-restore env WALRS_REPO="$REPO" "$W" restore --pgdata "$WORK/rst/prof-walrs" --backup latest --target-immediate
        rm -rf "$WORK/rst/prof-walrs"
        if [[ -n $PGBR ]]; then
            install -d -m 700 -o "$PG_USER" "$WORK/rst/prof-pgbr"
            prof pgbr-restore pgbackrest --config="$PGBR_CONF" --stanza=bench --pg1-path="$WORK/rst/prof-pgbr" --type=immediate restore
            rm -rf "$WORK/rst/prof-pgbr"
        fi
    else
        log "perf unavailable: no profile"
    fi
fi

# --- correctness (untimed) -------------------------------------------------------------------
BV="not run"
if [[ $BACKUP_VERIFY == 1 ]]; then
    s=${EPOCHREALTIME/./}
    if as_pg env WALRS_REPO="$REPO" "$W" backup verify "$WALRS_LAST" >"$WORK/bv.out" 2>&1; then BV="ok"; else BV="FAILED (exit $?): $(tail -3 "$WORK/bv.out" | tr '\n' ' ')"; fi
    BV="$BV, $(awk -v a="$s" -v b="${EPOCHREALTIME/./}" 'BEGIN{printf "%.1f s", (b-a)/1e6}')"
    log "walrs backup verify $WALRS_LAST: $BV"
fi
pg_stop "$DATA" fast
declare -A STARTED
if [[ $VERIFY == 1 ]]; then
    for c in "${RESTORES[@]}"; do
        d=$WORK/rst/$c-$ROUNDS
        printf '%s\n' "port = $((PG_PORT + 1))" "archive_mode = off" >>"$d/postgresql.auto.conf"
        s=${EPOCHREALTIME/./}
        if ! as_pg env LC_ALL=C.UTF-8 "$PGBIN/pg_ctl" -D "$d" -l "$WORK/rst/$c.log" -w -t 600 start >/dev/null; then
            STARTED[$c]="FAILED to start (log: $(tail -2 "$WORK/rst/$c.log" | tr '\n' ' '))"; continue
        fi
        for ((i = 0; i < 3000; i++)); do
            [[ $(PG_PORT=$((PG_PORT + 1)) psql_q "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]] && break
            nap 0.2
        done
        t=$(awk -v a="$s" -v b="${EPOCHREALTIME/./}" 'BEGIN{printf "%.1f", (b-a)/1e6}')
        n=$(PG_PORT=$((PG_PORT + 1)) psql_q "SELECT count(*) FROM pgbench_accounts" 2>&1 || true)
        rec=$(PG_PORT=$((PG_PORT + 1)) psql_q "SELECT pg_is_in_recovery()" 2>&1 || true)
        if [[ $n == "$ROWS_WANT" && $rec == f ]]; then
            STARTED[$c]="started, promoted in $t s, pgbench_accounts has $n rows: ok"
        else
            STARTED[$c]="MISMATCH: in recovery=$rec, rows=$n (want $ROWS_WANT), after $t s"
        fi
        pg_stop "$d" fast
        log "restored $c: ${STARTED[$c]}"
    done
fi

# --- walrs peak RSS at a second database size ------------------------------------------------
SMALL_DB=
if ((SMALL_SCALE > 0)); then
    for d in "$WORK"/rst/*-"$ROUNDS"; do rm -rf "$d"; done
    DATA_BIG=$DATA
    DATA=$WORK/data-small
    REPO=$WORK/repo-small
    install -d -m 755 -o "$PG_USER" "$REPO"
    pg_init "$DATA" "$PG_SOCK" "$PG_PORT" "archive_mode = on" "archive_command = 'WALRS_REPO=$REPO $W push %p'" \
        "max_wal_size = 4GB" "checkpoint_timeout = 30min"
    pg_start "$DATA"
    load_db "$SMALL_SCALE"
    SMALL_DB=$(psql_q "SELECT pg_database_size('postgres')")
    SMALL_BASE_BYTES=$(($(du -sb "$DATA" | cut -f1) - $(du -sb "$DATA/pg_wal" | cut -f1)))
    log "small database: $((SMALL_DB >> 20)) MiB"
    for ((r = 1; r <= 2; r++)); do
        timed backup-small walrs "$r" env WALRS_REPO="$REPO" "$W" basebackup -d "$CONN"
        record_size "$(du -sb "$REPO/backups/$(tail -1 "$WORK/t/out")" | cut -f1)"
    done
    pg_stop "$DATA" fast
    d=$WORK/rst/walrs-small
    install -d -m 700 -o "$PG_USER" "$d"
    timed restore-small walrs 1 env WALRS_REPO="$REPO" "$W" restore --pgdata "$d" --backup latest --target-immediate
    record_size "$(du -sb "$d" | cut -f1)"
    rm -rf "$d"
fi

# --- report ----------------------------------------------------------------------------------
col() { awk -F'\t' -v p="$1" -v c="$2" -v k="$3" '$1==p && $2==c {print $k}' "$RES"; }
med() { col "$@" | median; }
mm() { col "$@" | minmax; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (b+0 == 0) print "-"; else printf "%.2f", a/b}'; }
label() {
    case $1 in
        walrs) [[ $2 == backup* ]] && echo "walrs basebackup (zstd:1)" || echo "walrs restore (--jobs 4)" ;;
        walrs-j2) echo "walrs restore --jobs 2" ;;
        pgbb-null) echo "ref: pg_basebackup -Z none >/dev/null" ;;
        pgbb-client) echo "pg_basebackup client-zstd:1" ;;
        pgbb-client-w2) echo "pg_basebackup client-zstd:1,workers=2" ;;
        pgbb-pipe) echo "pg_basebackup | zstd -1 + sync" ;;
        pgbr) [[ $2 == backup* ]] && echo "pgBackRest backup full zst:1 pm=2" || echo "pgBackRest restore pm=2" ;;
    esac
}
row() { # phase contender baseline-contender
    local w u s rss mc dm sz base=$BASE_BYTES
    [[ $1 == *-small ]] && base=$SMALL_BASE_BYTES # "% base" of the small rows: of the small database
    w=$(med "$1" "$2" 4)
    u=$(med "$1" "$2" 5); s=$(med "$1" "$2" 6)
    rss=$(col "$1" "$2" 7 | sort -g | tail -1)
    mc=$(med "$1" "$2" 8); dm=$(med "$1" "$2" 9)
    sz=$(med "$1" "$2" 12)
    printf '%-40s %8.1f %13s %7s %7s %9.1f %6.1f %9.1f %9.0f %9.0f %6.1f%%\n' "$(label "$2" "$1")" "$w" "$(mm "$1" "$2" 4)" \
        "$(ratio "$w" "$(med "$1" walrs 4)")" "$([[ -n $3 ]] && ratio "$(med "$1" walrs 4)" "$w" || echo -)" \
        "$(awk -v a="$u" -v b="$s" 'BEGIN{print a+b}')" "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$mc" "$dm" \
        "$(awk -v b="$sz" 'BEGIN{print b/1048576}')" "$(awk -v b="$sz" -v d="$base" 'BEGIN{print 100*b/d}')"
}
verdict() { awk -v a="$1" -v t="$2" 'BEGIN{print (a+0 <= t+0) ? "met" : "MISSED"}'; }
echo
echo "# basebackup: $(date -u +%Y-%m-%d) $T_START-$(date -u +%H:%M) UTC, $(machine_line)"
echo "# $WALRS_VERSION; PostgreSQL $PG_VERSION; pgBackRest $([[ -n $PGBR ]] && pgbackrest version | awk '{print $2}' || echo -); zstd $(zstd -V | grep -o 'v[0-9.]*' | head -1)"
echo "# pgbench -i -s $SCALE: database $((DB_BYTES >> 20)) MiB, data directory $((DATA_BYTES >> 20)) MiB, $((BASE_BYTES >> 20)) MiB without pg_wal (= 100 % below); $ROUNDS rounds, alternating; medians (min..max)"
echo "# load average at start: $LOAD_START, at end: $(load_now); archiver before the backups: $ARCH, after: $ARCH_AFTER"
echo "# ratio = contender / walrs (wall); walrs/x = walrs / contender; CPU = user+sys of the client tree; machine CPU = all CPUs busy during the command"
printf '%-40s %8s %13s %7s %7s %9s %6s %9s %9s %9s %7s\n' "" "wall s" "min..max" "x/walrs" "walrs/x" "CPU s" "RSS MiB" "mach.CPU" "disk MB" "size MiB" "% base"
echo "## backup"
for c in "${BACKUPS[@]}"; do row backup "$c" "$([[ $c == walrs ]] || echo 1)"; done
echo "## restore (restore command only; recovery not included)"
for c in "${RESTORES[@]}"; do row restore "$c" "$([[ $c == walrs ]] || echo 1)"; done
if [[ -n $SMALL_DB ]]; then
    echo "## walrs at pgbench -s $SMALL_SCALE (database $((SMALL_DB >> 20)) MiB, $((SMALL_BASE_BYTES >> 20)) MiB without pg_wal = 100 % in these rows)"
    row backup-small walrs ""
    row restore-small walrs ""
fi
echo
echo "## per run (phase, contender, round, wall s, user s, sys s, peak RSS KiB, machine CPU s, disk MB, steal s, load1, size bytes)"
cat "$RES"
echo
echo "## correctness"
echo "walrs backup verify of the last walrs backup: $BV"
for c in "${RESTORES[@]}"; do echo "restored $c (last round), started once: ${STARTED[$c]:-not run}"; done
echo
echo "## targets"
wb=$(med backup walrs 4)
best=
for m in $PGBB_MODES; do
    [[ $m == null ]] && continue
    x=$(med backup "pgbb-$m" 4)
    printf 'walrs basebackup <= 1.0x pg_basebackup (%s): %.2fx (%s)\n' "$m" "$(ratio "$wb" "$x")" "$(verdict "$(ratio "$wb" "$x")" 1.0)"
done
if [[ -n $PGBR ]]; then
    x=$(med backup pgbr 4)
    printf 'walrs basebackup <= 0.5x pgBackRest backup: %.2fx (%s)\n' "$(ratio "$wb" "$x")" "$(verdict "$(ratio "$wb" "$x")" 0.5)"
    x=$(med restore pgbr 4)
    for m in "${RESTORES[@]}"; do
        [[ $m == pgbr ]] && continue
        printf 'walrs restore <= 0.7x pgBackRest restore (%s): %.2fx (%s)\n' "$(label "$m" restore)" "$(ratio "$(med restore "$m" 4)" "$x")" "$(verdict "$(ratio "$(med restore "$m" 4)" "$x")" 0.7)"
    done
fi
# per-round ratios: walrs (round r) / contender (round r), and their median
rcol() { awk -F'\t' -v p="$1" -v c="$2" -v r="$3" '$1==p && $2==c && $3==r {print $4}' "$RES"; }
for ph in backup restore; do
    if [[ $ph == backup ]]; then xs=("${BACKUPS[@]}"); else xs=("${RESTORES[@]}"); fi
    for x in "${xs[@]}"; do
        [[ $x == walrs ]] && continue
        for w in walrs $([[ $ph == restore && " ${RESTORES[*]} " == *" walrs-j2 "* && $x != walrs-j2 ]] && echo walrs-j2); do
            rs=()
            for ((r = 1; r <= ROUNDS; r++)); do rs+=("$(ratio "$(rcol "$ph" "$w" "$r")" "$(rcol "$ph" "$x" "$r")")"); done
            printf '%s %s / %s per round: %s; median %s\n' "$ph" "$w" "$x" "${rs[*]}" "$(printf '%s\n' "${rs[@]}" | median)"
        done
    done
done
rb=$(col backup walrs 7 | sort -g | tail -1); rr=$(col restore walrs 7 | sort -g | tail -1)
printf 'walrs peak RSS <= 200 MB: basebackup %.1f MiB (%s), restore %.1f MiB (%s)' "$(awk -v k="$rb" 'BEGIN{print k/1024}')" \
    "$(verdict "$((rb * 1024))" 200000000)" "$(awk -v k="$rr" 'BEGIN{print k/1024}')" "$(verdict "$((rr * 1024))" 200000000)"
if [[ -n $SMALL_DB ]]; then
    printf '; at -s %s: basebackup %.1f MiB, restore %.1f MiB' "$SMALL_SCALE" \
        "$(col backup-small walrs 7 | sort -g | tail -1 | awk '{print $1/1024}')" "$(col restore-small walrs 7 | sort -g | tail -1 | awk '{print $1/1024}')"
fi
echo
if [[ -d $PROF ]]; then
    echo
    echo "## profile (perf record -a -F 499 over one run each; shares of all samples of both CPUs)"
    cat "$PROF"/*.txt
fi
