#!/usr/bin/env bash
# Recovery replay: how long PostgreSQL 15 takes to recover the same archived WAL from a base backup
# with each restore_command, measured side by side in one run, methods alternating within each round.
#
#   sudo benches/replay.sh                              # 3 rounds x 5 methods, ~6 min on 2 cores
#   ROUNDS=5 ROWS=6e6 benches/replay.sh
#   METHODS="walrs walrs-pf0 cp pgbr-async" benches/replay.sh
#   METHODS="walrs walrs-pf4 walrs-pf16 walrs-pp1 walrs-pp4" benches/replay.sh   # prefetch tuning
#   WALRS_BIN=/path/to/walrs  S3_SERVER_BIN=/path/to/s3_server  (prebuilt: no cargo build)
#   KEEP=1 (keep the temp dir)   PG_PORT (5489)   S3_PORT (9350)   RECOVERY_TIMEOUT (600 s)
#
# Method:
#   One PG15 cluster (socket-only in /tmp, fsync=on, wal_level=replica, max_wal_size=4GB) archives
#   every segment with one archive_command into all repositories (a shell script, as `postgres`):
#     cp %p REPO-cp/%f;  WALRS_REPO=REPO-walrs WALRS_PUSH_PARALLEL=1 walrs push %p;
#     pgbackrest --stanza=bench archive-push %p  (repo zst level 1);  walrs push to S3 if walrs-s3 runs.
#   A base backup is taken first (pg_basebackup -Fp -X none -c fast). Then the workload:
#     CREATE TABLE t AS SELECT g, repeat(md5(g::text), 2) AS v FROM generate_series(1, ROWS) g;
#     UPDATE t SET v = md5(v) WHERE g % 20 = 0;  SELECT pg_switch_wal();
#   (ROWS=6e6: ~55 segments of 16 MiB), then the script waits until all is archived and stops the cluster.
#   For each (round, method): copy the base backup (untimed), append archive_mode=off,
#   log_line_prefix='%m [%p] ', restore_command='<method>' to its postgresql.conf, touch
#   recovery.signal, pg_ctl start, and wait for "database system is ready to accept connections" (the
#   end of archive recovery: the archive has no next segment, the server switches to timeline 2).
#   Times come from the server log's millisecond timestamps:
#     replay = first "restored log file" .. "redo done at"  (every fetch and the replay of all WAL,
#              plus the failed restore_command for the segment after the archive's end);
#              for `local`, which restores nothing, from "redo starts at"
#     total  = "starting PostgreSQL" .. "ready to accept connections"  (adds start-up and the
#              end-of-recovery checkpoint, which fsyncs the table: the same work for every method)
#   Then (untimed) pg_is_in_recovery() must be false and t must hold ROWS rows, ROWS/20 of them updated.
#   Method order rotates each round. Repositories are on the same disk and in the page cache.
# Methods (restore_command):
#   walrs        WALRS_REPO=R walrs fetch %f %p          (prefetch default: 8 ahead, 2 at once)
#   walrs-pf0    WALRS_REPO=R WALRS_PREFETCH=0 walrs fetch %f %p   (no prefetch)
#   walrs-pfN    (opt-in) WALRS_PREFETCH=N;   walrs-ppN (opt-in) WALRS_PREFETCH_PARALLEL=N
#   walrs-base   (opt-in) as walrs with the binary WALRS_BASE_BIN (an earlier build), which also
#                archives into its own repository: a before and after comparison in one run
#   walrs*-log   (opt-in, diagnostic) any walrs method with WALRS_LOG=info: prints how many segments
#                were served from the prefetch spool and the median time of a call
#   cp           cp REPO-cp/%f %p
#   pgbr-async   pgbackrest --config=F --stanza=bench archive-get %f "%p"   (archive-async=y,
#                process-max=2, archive-get-queue-max default (128 MiB), spool emptied each time)
#   walrs-s3     WALRS_REPO=s3://walrs-test/replay WALRS_S3_ENDPOINT=http://127.0.0.1:S3_PORT
#                AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. walrs fetch %f %p  (prefetch default),
#                the tests' S3 server (examples/s3_server.rs, s3s-fs) started by this script
#   local        the floor: every archived segment is copied into pg_wal before the start (untimed)
#                and restore_command is /bin/false, so PostgreSQL replays from pg_wal with no fetch
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
ROWS=${ROWS:-6e6}
METHODS=${METHODS:-walrs walrs-pf0 cp pgbr-async walrs-s3 local}
RECOVERY_TIMEOUT=${RECOVERY_TIMEOUT:-600}
PG_PORT=${PG_PORT:-5489}
S3_PORT=${S3_PORT:-9350}

need_root
apt_need pgbackrest pgbackrest || die "pgbackrest is not installed and apt-get install failed"

LOAD_START=$(load_now)
make_workdir walrs-replay
PG_SOCK=$WORK/s
DATA=$WORK/data
RDATA=$WORK/rdata
cleanup() {
    local rc=$?
    pg_stop "$RDATA" immediate
    pg_stop "$DATA" immediate
    [[ -n ${S3_PID:-} ]] && kill "$S3_PID" 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT

install -d -m 755 -o "$PG_USER" "$WORK/bin"
install_walrs "$WORK/bin/walrs"
W=$WORK/bin/walrs
log "walrs: $WALRS_VERSION; pgbackrest: $(pgbackrest version 2>/dev/null || echo none)"
BASE=0
install_walrs_base "$WORK/bin/walrs-base" && BASE=1

S3=0
[[ " $METHODS " == *" walrs-s3"* ]] && S3=1
S3_ENV=
if ((S3)); then
    start_s3_server
fi

install -d -m 700 -o "$PG_USER" "$WORK/repo-cp" "$WORK/repo-walrs" "$WORK/repo-pgbr" "$WORK/repo-walrs-base"

pgbr_conf() { # pgbr_conf NAME PG1PATH [extra lines...]
    local d=$WORK/pgbr-$1 pg=$2; shift 2
    install -d -m 700 -o "$PG_USER" "$d" "$d/log" "$d/lock" "$d/spool"
    {
        echo "[global]"
        echo "repo1-path=$WORK/repo-pgbr"
        echo "log-path=$d/log"
        echo "lock-path=$d/lock"
        echo "spool-path=$d/spool"
        echo "process-max=2"
        echo "compress-type=zst"
        echo "compress-level=1"
        echo "start-fast=y"
        local l; for l in "$@"; do echo "$l"; done
        echo
        echo "[bench]"
        echo "pg1-path=$pg"
        echo "pg1-port=$PG_PORT"
        echo "pg1-socket-path=$PG_SOCK"
    } >"$d/pgbackrest.conf"
    chown "$PG_USER" "$d/pgbackrest.conf"
}
pgbr_conf push "$DATA"
pgbr_conf get "$RDATA" "archive-async=y"

# The archive command: every segment into every repository.
cat >"$WORK/bin/archive.sh" <<EOF
#!/bin/sh
set -e
cp "\$1" "$WORK/repo-cp/\$2.tmp" && mv "$WORK/repo-cp/\$2.tmp" "$WORK/repo-cp/\$2"
WALRS_REPO=$WORK/repo-walrs WALRS_PUSH_PARALLEL=1 $W push "\$1"
pgbackrest --config=$WORK/pgbr-push/pgbackrest.conf --stanza=bench archive-push "\$1"
EOF
((S3)) && echo "env $S3_ENV WALRS_REPO=s3://walrs-test/replay WALRS_PUSH_PARALLEL=1 $W push \"\$1\"" >>"$WORK/bin/archive.sh"
((BASE)) && echo "WALRS_REPO=$WORK/repo-walrs-base WALRS_PUSH_PARALLEL=1 $WORK/bin/walrs-base push \"\$1\"" >>"$WORK/bin/archive.sh"
chmod 755 "$WORK/bin/archive.sh"

pg_init "$DATA" "$PG_SOCK" "$PG_PORT" "archive_mode = on" "archive_command = '$WORK/bin/archive.sh %p %f'" \
    "max_wal_size = 4GB" "checkpoint_timeout = 30min" "log_checkpoints = off"
pg_start "$DATA"
as_pg pgbackrest --config="$WORK/pgbr-push/pgbackrest.conf" --stanza=bench stanza-create >/dev/null \
    || die "pgbackrest stanza-create failed (see $WORK/pgbr-push/log)"

log "base backup"
psql_q "CREATE TABLE marker AS SELECT 1 AS x" >/dev/null
as_pg "$PGBIN/pg_basebackup" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -D "$WORK/base" -Fp -X none -c fast \
    || die "pg_basebackup failed"
log "workload: $ROWS rows, then 5 % of them updated"
psql_q "CREATE TABLE t AS SELECT g, repeat(md5(g::text), 2) AS v FROM generate_series(1, $ROWS) g" >/dev/null
psql_q "UPDATE t SET v = md5(v) WHERE g % 20 = 0" >/dev/null
EXPECT=$(psql_q "SELECT count(*) || ' ' || count(*) FILTER (WHERE length(v) = 32) FROM t")
last=$(psql_q "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1200); do
    [[ $(psql_q "SELECT last_archived_wal FROM pg_stat_archiver") == "$last" ]] && break
    nap 0.1
done
[[ $(psql_q "SELECT last_archived_wal FROM pg_stat_archiver") == "$last" ]] || die "$last was not archived"
[[ $(psql_q "SELECT failed_count FROM pg_stat_archiver") == 0 ]] || log "WARNING: archive_command failed at least once (retried)"
pg_stop "$DATA" fast
first=$(sed -n 's/^START WAL LOCATION: .* (file \(.*\))$/\1/p' "$WORK/base/backup_label")
NSEG=$(cd "$WORK/repo-cp" && ls | awk -v a="$first" -v b="$last" 'length($0) == 24 && $0 >= a && $0 <= b' | wc -l)
log "archive: segments $first .. $last ($NSEG), expected rows/updated: $EXPECT"
sync

restore_cmd() {
    local m=$1
    # METHOD-log (diagnostic): the same with WALRS_LOG=info, so walrs logs every fetch to the server log
    if [[ $m == walrs*-log ]]; then printf 'WALRS_LOG=info '; m=${m%-log}; fi
    case $m in
        walrs) echo "WALRS_REPO=$WORK/repo-walrs $W fetch %f %p" ;;
        walrs-pf[0-9]*) echo "WALRS_REPO=$WORK/repo-walrs WALRS_PREFETCH=${m#walrs-pf} $W fetch %f %p" ;;
        walrs-pp[0-9]*) echo "WALRS_REPO=$WORK/repo-walrs WALRS_PREFETCH_PARALLEL=${m#walrs-pp} $W fetch %f %p" ;;
        cp) echo "cp $WORK/repo-cp/%f %p" ;;
        pgbr-async) echo "pgbackrest --config=$WORK/pgbr-get/pgbackrest.conf --stanza=bench archive-get %f \"%p\"" ;;
        walrs-s3) echo "$S3_ENV WALRS_REPO=s3://walrs-test/replay $W fetch %f %p" ;;
        walrs-base) echo "WALRS_REPO=$WORK/repo-walrs-base $WORK/bin/walrs-base fetch %f %p" ;;
        local) echo "/bin/false" ;;
        *) die "unknown method $m" ;;
    esac
}
for m in $METHODS; do restore_cmd "$m" >/dev/null; done

# Milliseconds since the epoch of a server log line's "%m" prefix (2026-11-21 17:01:02.345 UTC).
logms() { local l; read -r l || return 0; date -d "$(cut -d' ' -f1-3 <<<"$l")" +%s%3N; }
ms_of() { { grep -m1 -F "$2" "$1" || true; } | logms; }
ms_of_last() { { grep -F "$2" "$1" || true; } | tail -1 | logms; }
walrs_procs() { pgrep -f "^$W" || true; }

RESULTS=$WORK/results.tsv
: >"$RESULTS"
read -r -a MLIST <<<"$METHODS"
NM=${#MLIST[@]}
log "$ROUNDS rounds x $NM methods"
for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < NM; i++)); do
        m=${MLIST[$(((i + round - 1) % NM))]}
        rm -rf "$RDATA" "$WORK/pgbr-get/spool"
        install -d -m 700 -o "$PG_USER" "$WORK/pgbr-get/spool"
        cp -a "$WORK/base" "$RDATA"
        {
            echo "archive_mode = off"
            echo "log_line_prefix = '%m [%p] '"
            echo "restore_command = '$(restore_cmd "$m")'"
        } >>"$RDATA/postgresql.conf"
        touch "$RDATA/recovery.signal"
        if [[ $m == local ]]; then
            (cd "$WORK/repo-cp" && ls | awk -v a="$first" -v b="$last" 'length($0) == 24 && $0 >= a && $0 <= b' |
                while read -r f; do install -m 600 -o "$PG_USER" "$f" "$RDATA/pg_wal/$f"; done)
        fi
        chown "$PG_USER" "$RDATA/recovery.signal"
        RLOG=$WORK/rlog-$round-$m.log
        sync
        t0=$EPOCHREALTIME
        as_pg env LC_ALL=C.UTF-8 "$PGBIN/pg_ctl" -D "$RDATA" -l "$RLOG" -W start >/dev/null
        deadline=$((SECONDS + RECOVERY_TIMEOUT))
        status=ok
        until grep -q 'database system is ready to accept connections' "$RLOG" 2>/dev/null; do
            if ((SECONDS > deadline)); then status=timeout; break; fi
            if grep -qE 'FATAL|PANIC' "$RLOG" 2>/dev/null; then status=failed; break; fi
            nap 0.05
        done
        t1=$EPOCHREALTIME
        [[ $status == ok ]] || { tail -20 "$RLOG" >&2; die "round $round $m: recovery $status (log $RLOG)"; }
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
        s0=$(ms_of "$RLOG" 'starting PostgreSQL')
        r0=$(ms_of "$RLOG" 'restored log file')
        r1=$(ms_of_last "$RLOG" 'restored log file')
        rd=$(ms_of "$RLOG" 'redo done at')
        e1=$(ms_of "$RLOG" 'database system is ready to accept connections')
        nrest=$(grep -c 'restored log file' "$RLOG" || true)
        [[ -n $r0 ]] || { r0=$(ms_of "$RLOG" 'redo starts at'); r1=$r0; }
        replay=$(awk -v a="$r0" -v b="$rd" 'BEGIN{printf "%.3f", (b-a)/1000}')
        total=$(awk -v a="$s0" -v b="$e1" 'BEGIN{printf "%.3f", (b-a)/1000}')
        restspan=$(awk -v a="$r0" -v b="$r1" 'BEGIN{printf "%.3f", (b-a)/1000}')
        redoel=$(sed -n 's/.*redo done at .*elapsed: \([0-9.]*\) s.*/\1/p' "$RLOG" | head -1)
        # Untimed checks.
        inrec=$(psql_q "SELECT pg_is_in_recovery()")
        got=$(psql_q "SELECT count(*) || ' ' || count(*) FILTER (WHERE length(v) = 32) FROM t")
        check=ok
        [[ $inrec == f && $got == "$EXPECT" ]] || check="BAD(in_recovery=$inrec rows=$got)"
        pg_stop "$RDATA" immediate
        # A prefetcher left behind would load the next measurement: wait for it, report it.
        left=0
        for _ in $(seq 100); do [[ -z $(walrs_procs) ]] && break; left=1; nap 0.1; done
        [[ -z $(walrs_procs) ]] || log "WARNING: walrs processes still running after the stop: $(walrs_procs | tr '\n' ' ')"
        if [[ $m == walrs*-log ]]; then
            hits=$(grep -c 'from the prefetch spool in' "$RLOG" || true)
            direct=$(grep -cE 'restored [0-9A-F]{24} to .* bytes\) in' "$RLOG" || true)
            log "round $round $m: $hits segments served from the prefetch spool (median $(sed -n 's/.*from the prefetch spool in \([0-9.]*\) s.*/\1/p' "$RLOG" | median) s per call), $direct fetched by the call itself (median $(sed -En 's/.*restored [0-9A-F]{24} to .* bytes\) in ([0-9.]*) s.*/\1/p' "$RLOG" | median) s)"
        fi
        log "round $round $(printf '%-10s' "$m") replay $replay s (redo elapsed $redoel s, restores $nrest, first..last restore $restspan s), total $total s, wall $wall s, check $check$([[ $left == 1 ]] && echo ', waited for a walrs process to exit')"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$m" "$replay" "$total" "$wall" "$redoel" "$nrest" "$restspan" "$check" >>"$RESULTS"
    done
done

BAD=$(awk -F'\t' '$9 != "ok"' "$RESULTS" | wc -l)
ERRS=$(cat "$WORK"/rlog-*.log | grep -cE 'FATAL|PANIC|ERROR|WARNING' || true)
cat "$WORK"/rlog-*.log | grep -E 'FATAL|PANIC|ERROR|WARNING|walrs [a-z]+:' | sed -E 's/^[-0-9]+ [0-9:.]+ UTC \[[0-9]+\] //; s/^[-0-9]+T[0-9:.]+Z +//' | sort | uniq -c | sort -rn | head -10 >&2 || true

ref=cp
med() { awk -F'\t' -v m="$1" -v c="$2" '$2==m {print $c}' "$RESULTS" | median; }
refrep=$(med "$ref" 3); reftot=$(med "$ref" 4)
pgbrep=$(med pgbr-async 3 2>/dev/null); pgbtot=$(med pgbr-async 4 2>/dev/null)
echo
echo "# replay: $(date -u +%Y-%m-%dT%H:%MZ), $(machine_line)"
echo "# walrs $WALRS_VERSION; $(pgbackrest version 2>/dev/null || echo 'pgbackrest: none'); PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
echo "# $ROUNDS rounds, $NSEG segments ($first .. $last), ROWS=$ROWS; failed checks: $BAD; FATAL/PANIC/ERROR/WARNING log lines: $ERRS"
echo "# load average at start: $LOAD_START, at end: $(load_now) (compare within a run)"
printf '%-11s %6s %9s %14s %7s %7s %9s %14s %7s %7s\n' method rounds "replay s" "min..max" "x cp" "x pgbr" "total s" "min..max" "x cp" "x pgbr"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else print "-"}'; }
for m in "${MLIST[@]}"; do
    r=$(med "$m" 3); t=$(med "$m" 4)
    printf '%-11s %6s %9s %14s %7s %7s %9s %14s %7s %7s\n' "$m" "$(awk -F'\t' -v m="$m" '$2==m' "$RESULTS" | wc -l)" \
        "$r" "$(awk -F'\t' -v m="$m" '$2==m {print $3}' "$RESULTS" | minmax)" "$(ratio "$r" "$refrep")" "$(ratio "$r" "$pgbrep")" \
        "$t" "$(awk -F'\t' -v m="$m" '$2==m {print $4}' "$RESULTS" | minmax)" "$(ratio "$t" "$reftot")" "$(ratio "$t" "$pgbtot")"
done
echo
echo "# per round (round method replay-s total-s wall-s redo-elapsed-s restored first..last-restore-s check):"
sed 's/^/#   /' "$RESULTS"
