#!/usr/bin/env bash
# Archiver drain rate: how fast PostgreSQL 15's archiver empties a backlog of .ready segments with
# each archive_command, measured side by side in one run, methods alternating within each round.
#
#   sudo benches/archive_drain.sh                 # 3 rounds x 6 methods, ~8 min on 2 cores
#   ROUNDS=5 ROWS=8e6 benches/archive_drain.sh    # more rounds / bigger backlog
#   METHODS="walrs-zstd cp-durable true" benches/archive_drain.sh
#   METHODS="walrs-p2 walrs-zstd walrs-p8" benches/archive_drain.sh   # look-ahead parallelism tuning
#   WALRS_BIN=/path/to/walrs  (skip `cargo build --release`)   KEEP=1 (keep the temp dir)
#   S3_SERVER_BIN=/path/to/s3_server  (prebuilt examples/s3_server for walrs-s3*; else it is built)
#   S3_PORT (9349)
#   (walrs-s3*: the S3 server's CPU per segment is printed each round, from /proc/PID/stat)
#   CPU_TIME=1  (diagnostic) run each walrs* command under /usr/bin/time and print walrs's CPU
#               (user+sys, its look-ahead threads included) per archived segment; adds one exec
#   SAVE_SEGMENT=/path/file   (copy one real, full segment there, e.g. for WALRS_BENCH_SEGMENT)
#   WORKLOAD=md5|pgbench  (md5) what writes the backlog: md5 = the CREATE TABLE AS below; pgbench =
#               `pgbench -i -s PGB_SCALE` (tables recreated) then PGB_SECONDS of TPC-B (-c 4 -j 2,
#               synchronous_commit off to write WAL faster) after a checkpoint (full-page images,
#               then row updates): PGB_SCALE (20), PGB_SECONDS (30); ~50-60 segments
#   CPU_PERF=1  (default when perf is installed) CPU time of the whole archive path per archived
#               segment, for every method: `perf stat -e task-clock -p <archiver>` from the reload
#               until the backlog is drained and every background pusher has exited (the archiver,
#               each shell, each command and everything they start, detached pushers included:
#               perf counters are inherited by every descendant)
#   CEILING=1   (default) after the rounds, the codec's in-process CPU ceiling on both cores on
#               CEILING_SEGMENTS (12) segments spread over the first backlog (`cargo bench --bench
#               codec_ceiling`, or CEILING_BIN=/path/to/the built bench binary); walrs's median as
#               a share of it, by wall clock and by CPU time (cores / CPU ms per segment)
#
# Issue 20's run: METHODS="walrs-zstd pgbr-async cp-durable" ROUNDS=5 WORKLOAD=md5 (then pgbench)
#
# Method:
#   one PG15 cluster (initdb as `postgres`, socket-only in /tmp, fsync=on (default), wal_level=replica,
#   archive_mode=on, max_wal_size=4GB so no checkpoint runs during a drain). For each (round, method):
#   archive_command='' and reload; DROP/CREATE TABLE t AS SELECT g, repeat(md5(g::text),2) FROM
#   generate_series(1, ROWS) g (8e6 rows = ~62 segments); CHECKPOINT; pg_switch_wal(); sync; then
#   ALTER SYSTEM SET archive_command = '<method>'; SELECT pg_reload_conf() and wait until
#   archive_status/ has no .ready file. Rate = backlog / (pg_stat_archiver.last_archived_time -
#   clock_timestamp() of the reload), both taken by the server. Method order rotates each round.
#   Repositories are kept until the end (cp/cp-durable: 1 GB per round; ~6 GB of /tmp at most).
#   Per round it also prints /proc/pressure cpu/io stall shares, the machine's CPU busy share
#   (/proc/stat, both cores, everything running) and how much of the backlog was cached.
#   Before each backlog the walrs spool (DATA/walrs_spool, look-ahead records) is removed, untimed.
# Methods:
#   walrs-zstd   WALRS_REPO=R walrs push %p                       (repository default zstd:1;
#                look-ahead with the default WALRS_PUSH_PARALLEL, 4)
#   walrs-p1     WALRS_REPO=R WALRS_PUSH_PARALLEL=1 walrs push %p (no look-ahead: one segment per call)
#   walrs-p2, walrs-p3, walrs-p8  (opt-in, tuning) WALRS_PUSH_PARALLEL=2 / 3 / 8
#   walrs-s3     WALRS_REPO=s3://walrs-test/drain-walrs-s3 WALRS_S3_ENDPOINT=http://127.0.0.1:S3_PORT
#                AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. walrs push %p  (look-ahead, default 4)
#                against the tests' S3 server (examples/s3_server.rs: s3s-fs, SigV4 checked, objects
#                as files under the temp dir) started by this script on 127.0.0.1, as benches/s3.sh does
#   walrs-s3-p1  (opt-in) the same with WALRS_PUSH_PARALLEL=1
#   walrs-lz4    WALRS_REPO=R WALRS_COMPRESSION=lz4 walrs push %p
#   walrs-zstd-enc  (opt-in) as walrs-zstd with WALRS_ENCRYPTION_KEY_FILE
#   walrs-base   (opt-in) as walrs-zstd with the binary WALRS_BASE_BIN (an earlier build: a before
#                and after comparison in one run)
#   cp-durable   cp %p D/%f.tmp && sync D/%f.tmp && mv D/%f.tmp D/%f && sync D
#                (coreutils `sync FILE` = fsync(file); `sync DIR` = fsync(dir))
#   cp           cp %p D/%f  (opt-in; not durable)
#   pgbr-sync    pgbackrest --config=F --stanza=bench archive-push %p
#   pgbr-async   pgbackrest --config=F --stanza=bench --archive-async archive-push %p
#                (both: compress-type=zst compress-level=1 process-max=2, own repo each)
#   true         /bin/true  (the archiver's own ceiling)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-5}
ROWS=${ROWS:-8e6}
WORKLOAD=${WORKLOAD:-md5}
PGB_SCALE=${PGB_SCALE:-20}
PGB_SECONDS=${PGB_SECONDS:-30}
CEILING=${CEILING:-1}
CEILING_SEGMENTS=${CEILING_SEGMENTS:-12}
if [[ -z ${CPU_PERF:-} ]]; then command -v perf >/dev/null 2>&1 && CPU_PERF=1 || CPU_PERF=0; fi
case $WORKLOAD in md5 | pgbench) ;; *) die "WORKLOAD is md5 or pgbench, not $WORKLOAD" ;; esac
METHODS=${METHODS:-walrs-zstd walrs-p1 cp-durable pgbr-async true walrs-s3}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
PG_PORT=${PG_PORT:-5488}
S3_PORT=${S3_PORT:-9349}
CPU_TIME=${CPU_TIME:-0}

need_root
for m in $METHODS; do
    case $m in
        pgbr-*) apt_need pgbackrest pgbackrest || die "pgbackrest is not installed and apt-get install failed" ;;
    esac
done

LOAD_START=$(load_now)
make_workdir walrs-drain
PG_SOCK=$WORK/s
DATA=$WORK/data
cleanup() {
    local rc=$?
    pg_stop "$DATA" immediate
    [[ -n ${S3_PID:-} ]] && kill "$S3_PID" 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT

install -d -m 755 -o "$PG_USER" "$WORK/bin"
install_walrs "$WORK/bin/walrs"
install_walrs_base "$WORK/bin/walrs-base" || true
log "walrs: $WALRS_VERSION; pgbackrest: $(pgbackrest version 2>/dev/null || echo none)"

# The S3 server (only when a walrs-s3* method runs).
S3_ENV=
if [[ " $METHODS " == *" walrs-s3"* ]]; then
    start_s3_server
fi

pg_init "$DATA" "$PG_SOCK" "$PG_PORT" "archive_mode = on" "archive_command = ''" \
    "max_wal_size = 4GB" "checkpoint_timeout = 30min" "log_checkpoints = off"
pg_start "$DATA"

# Repositories, owned by postgres.
for m in $METHODS; do install -d -m 700 -o "$PG_USER" "$WORK/repo-$m"; done
head -c 32 /dev/urandom | base64 >"$WORK/key"
chown "$PG_USER" "$WORK/key"; chmod 600 "$WORK/key"

pgbr_conf() { # $1 = method name
    local d=$WORK/pgbr-$1
    install -d -m 700 -o "$PG_USER" "$d" "$d/log" "$d/lock" "$d/spool"
    cat >"$d/pgbackrest.conf" <<EOF
[global]
repo1-path=$WORK/repo-$1
log-path=$d/log
lock-path=$d/lock
spool-path=$d/spool
process-max=2
compress-type=zst
compress-level=1
start-fast=y

[bench]
pg1-path=$DATA
pg1-port=$PG_PORT
pg1-socket-path=$PG_SOCK
EOF
    chown "$PG_USER" "$d/pgbackrest.conf"
    as_pg pgbackrest --config="$d/pgbackrest.conf" --stanza=bench stanza-create >/dev/null \
        || die "pgbackrest stanza-create failed (see $d/log)"
}

cmd_for() {
    local r=$WORK/repo-$1 pre=
    [[ $CPU_TIME == 1 && $1 == walrs* ]] && pre="/usr/bin/time -a -o $WORK/cpu-$1 -f %U+%S env "
    printf '%s' "$pre"
    case $1 in
        walrs-zstd) echo "WALRS_REPO=$r $WORK/bin/walrs push %p" ;;
        walrs-base) echo "WALRS_REPO=$r $WORK/bin/walrs-base push %p" ;;
        walrs-p1 | walrs-p2 | walrs-p3 | walrs-p8) echo "WALRS_REPO=$r WALRS_PUSH_PARALLEL=${1#walrs-p} $WORK/bin/walrs push %p" ;;
        walrs-s3) echo "$S3_ENV WALRS_REPO=s3://walrs-test/drain-$1 $WORK/bin/walrs push %p" ;;
        walrs-s3-p1) echo "$S3_ENV WALRS_REPO=s3://walrs-test/drain-$1 WALRS_PUSH_PARALLEL=1 $WORK/bin/walrs push %p" ;;
        walrs-lz4) echo "WALRS_REPO=$r WALRS_COMPRESSION=lz4 $WORK/bin/walrs push %p" ;;
        walrs-zstd-enc) echo "WALRS_REPO=$r WALRS_ENCRYPTION_KEY_FILE=$WORK/key $WORK/bin/walrs push %p" ;;
        cp-durable) echo "cp %p $r/%f.tmp && sync $r/%f.tmp && mv $r/%f.tmp $r/%f && sync $r" ;;
        cp) echo "cp %p $r/%f" ;;
        pgbr-sync) echo "pgbackrest --config=$WORK/pgbr-$1/pgbackrest.conf --stanza=bench archive-push %p" ;;
        pgbr-async) echo "pgbackrest --config=$WORK/pgbr-$1/pgbackrest.conf --stanza=bench --archive-async archive-push %p" ;;
        true) echo "/bin/true" ;;
        *) die "unknown method $1" ;;
    esac
}
if [[ $CPU_TIME == 1 ]]; then
    apt_need /usr/bin/time time || die "cannot install time"
    for m in $METHODS; do : >"$WORK/cpu-$m"; chown "$PG_USER" "$WORK/cpu-$m"; done
fi
for m in $METHODS; do
    case $m in pgbr-*) pgbr_conf "$m" ;; esac
    cmd_for "$m" >/dev/null
done

set_archive_command() {
    psql_q "ALTER SYSTEM SET archive_command = '$1'" >/dev/null
    psql_q "SELECT pg_reload_conf()" >/dev/null
}
# Pressure stall totals (us) of cpu and io "some" lines: how much tasks waited for CPU / I/O.
psi() { local f; for f in cpu io; do awk '/^some/ {sub("total=", "", $5); printf "%s ", $5}' "/proc/pressure/$f" 2>/dev/null || printf '0 '; done; }
# Busy jiffies and total jiffies of all CPUs (/proc/stat): the machine's CPU use, everything included.
# CPU ms (user+sys) the S3 server has used so far.
s3cpu() { [[ -n ${S3_PID:-} ]] && awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($14+$15)*1000/hz}' "/proc/$S3_PID/stat" || echo 0; }
cpustat() { awk '/^cpu / {t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
# The archiver process of this cluster (a child of the postmaster).
archiver_pid() {
    ps --ppid "$(head -1 "$DATA/postmaster.pid")" -o pid=,args= | awk '/archiver/ {print $1; exit}'
}
# Waits (up to 30 s) until no walrs background pusher holds its lock: its CPU belongs to the drain.
wait_pushers() {
    local lock=$DATA/walrs_spool/push/background.lock i
    [[ -e $lock ]] || return 0
    for ((i = 0; i < 600; i++)); do flock -n "$lock" true && return 0; nap 0.05; done
}
ready_count() {
    local f n=0
    for f in "$DATA"/pg_wal/archive_status/*.ready; do [[ -e $f ]] && n=$((n + 1)); done
    echo $n
}

# Backlog: a fresh batch of segments while nothing archives.
make_backlog() {
    set_archive_command ""
    if [[ $WORKLOAD == pgbench ]]; then
        pgbench -i -q -s "$PGB_SCALE" -h "$PG_SOCK" -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1 \
            || die "pgbench -i failed"
        psql_q "CHECKPOINT" >/dev/null
        PGOPTIONS="-c synchronous_commit=off" pgbench -n -c 4 -j 2 -T "$PGB_SECONDS" -h "$PG_SOCK" -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1 \
            || die "pgbench failed"
    else
        psql_q "DROP TABLE IF EXISTS t" >/dev/null
        psql_q "CREATE TABLE t AS SELECT g, repeat(md5(g::text), 2) AS v FROM generate_series(1, $ROWS) g" >/dev/null
    fi
    psql_q "CHECKPOINT" >/dev/null
    psql_q "SELECT pg_switch_wal()" >/dev/null
    local a b
    a=$(ready_count); nap 0.3; b=$(ready_count)
    while [[ $a != "$b" ]]; do a=$b; nap 0.3; b=$(ready_count); done
    sync
    echo "$b"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
declare -A SAVED=()
read -r -a MLIST <<<"$METHODS"
NM=${#MLIST[@]}
log "$ROUNDS rounds x $NM methods, $ROWS rows per backlog"
for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < NM; i++)); do
        m=${MLIST[$(((i + round - 1) % NM))]}
        rm -rf "$DATA/walrs_spool"
        n=$(make_backlog)
        if [[ $CEILING == 1 && ! -d $WORK/ceiling ]]; then
            # The codec ceiling is measured on segments of this workload's first backlog.
            mkdir -p "$WORK/ceiling"
            # Spread over the whole backlog (a pgbench backlog starts with its bulk load).
            for f in $(cd "$DATA/pg_wal/archive_status" && ls | sed -n 's/\.ready$//p' | grep -E '^[0-9A-F]{24}$' |
                awk -v k="$CEILING_SEGMENTS" '{a[NR]=$0} END {for (i=0; i<k && i<NR; i++) print a[int(i*NR/k)+1]}'); do
                cp "$DATA/pg_wal/$f" "$WORK/ceiling/"
            done
        fi
        # share of the backlog in the page cache (the archive command should read it from memory)
        cached=$(cd "$DATA/pg_wal" && fincore -n -b -o RES,SIZE $(cd archive_status && ls | sed -n 's/\.ready$//p') 2>/dev/null |
            awk '{r+=$1; t+=$2} END {printf "%.0f", t ? 100*r/t : 0}')
        cpu0=$( (cat "$WORK/cpu-$m" 2>/dev/null || true) | wc -l)
        read -r ac0 fc0 <<<"$(psql_q "SELECT archived_count, failed_count FROM pg_stat_archiver" | tr '|' ' ')"
        PERF_PID=
        if [[ $CPU_PERF == 1 ]]; then
            perf stat -x, -e task-clock -p "$(archiver_pid)" -o "$WORK/perf.out" 2>/dev/null &
            PERF_PID=$!
            nap 0.2 # perf attaches
        fi
        start=$(psql_q "ALTER SYSTEM SET archive_command = '$(cmd_for "$m")'" >/dev/null &&
            psql_q "SELECT extract(epoch FROM clock_timestamp()), pg_reload_conf()" | cut -d'|' -f1)
        read -r pc0 pi0 <<<"$(psi)"; w0=${EPOCHREALTIME/./}; read -r cb0 ct0 <<<"$(cpustat)"; s3c0=$(s3cpu)
        deadline=$((SECONDS + DRAIN_TIMEOUT))
        status=ok
        while [[ $(ready_count) -gt 0 ]]; do
            if ((SECONDS > deadline)); then status=timeout; break; fi
            nap 0.05
        done
        read -r pc1 pi1 <<<"$(psi)"; w1=${EPOCHREALTIME/./}; read -r cb1 ct1 <<<"$(cpustat)"; s3c1=$(s3cpu)
        busy=$(awk -v a="$cb0" -v b="$cb1" -v c="$ct0" -v d="$ct1" 'BEGIN{printf "%.0f", (d > c) ? 100*(b-a)/(d-c) : 0}')
        cpuw=$(awk -v a="$pc0" -v b="$pc1" -v t=$((w1 - w0)) 'BEGIN{printf "%.0f", 100*(b-a)/t}')
        iow=$(awk -v a="$pi0" -v b="$pi1" -v t=$((w1 - w0)) 'BEGIN{printf "%.0f", 100*(b-a)/t}')
        read -r ac1 fc1 end <<<"$(psql_q "SELECT archived_count, failed_count, extract(epoch FROM last_archived_time) FROM pg_stat_archiver" | tr '|' ' ')"
        pathms=-
        if [[ -n $PERF_PID ]]; then
            wait_pushers
            kill -INT "$PERF_PID" 2>/dev/null || true
            wait "$PERF_PID" 2>/dev/null || true
            pathms=$(awk -F, -v n="$((ac1 - ac0))" '$3 ~ /task-clock/ && n > 0 {printf "%.1f", $1/n}' "$WORK/perf.out")
            [[ -n $pathms ]] || pathms=-
        fi
        if [[ $status != ok ]]; then
            log "round $round $m: not drained after ${DRAIN_TIMEOUT}s; draining the rest with /bin/true"
            set_archive_command /bin/true
            while [[ $(ready_count) -gt 0 ]]; do nap 0.2; done
            read -r ac1 fc1 end <<<"$(psql_q "SELECT archived_count, failed_count, extract(epoch FROM last_archived_time) FROM pg_stat_archiver" | tr '|' ' ')"
        fi
        secs=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.3f", b-a}')
        cpums=- s3ms=-
        [[ $m == walrs-s3* ]] && s3ms=$(awk -v a="$s3c0" -v b="$s3c1" -v n="$n" 'BEGIN{printf "%.1f", (b-a)/n}')
        if [[ $CPU_TIME == 1 && $m == walrs* ]]; then
            cpums=$(tail -n +$((cpu0 + 1)) "$WORK/cpu-$m" | grep -E '^[0-9.]+\+[0-9.]+$' |
                awk -F+ -v n="$n" '{s+=$1+$2; k++} END {printf "%.1f", n ? 1000*s/n : 0}')
        fi
        rate=$(awk -v n="$n" -v s="$secs" 'BEGIN{printf "%.2f", n/s}')
        log "round $round $(printf '%-11s' "$m") backlog $n, archived $((ac1 - ac0)), failed $((fc1 - fc0)), $secs s, $rate seg/s, cpu-wait ${cpuw}% io-wait ${iow}% cpu-busy ${busy}%, backlog cached ${cached}%$([[ $pathms != - ]] && echo ", archive path CPU ${pathms} ms/segment")$([[ $cpums != - ]] && echo ", walrs CPU ${cpums} ms/segment")$([[ $s3ms != - ]] && echo ", S3 server CPU ${s3ms} ms/segment")${status/ok/}"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$m" "$n" "$((ac1 - ac0))" "$((fc1 - fc0))" "$secs" "$rate" "$cpuw" "$iow" "$cached" "$busy" "$cpums" "$s3ms" "$pathms" >>"$RESULTS"
        [[ $status == ok ]] || sed -i '$ s/$/\tTIMEOUT/' "$RESULTS"
        # Stored size per segment.
        if [[ $m == walrs-s3* ]]; then
            SAVED[$m]=$(du -sb "$WORK/s3root/walrs-test/drain-$m" | cut -f1)
        elif [[ $m == cp* || $m == walrs* ]]; then
            SAVED[$m]=$(du -sb "$WORK/repo-$m" | cut -f1)
        elif [[ $m == pgbr-* ]]; then
            SAVED[$m]=$(du -sb "$WORK/repo-$m/archive" | cut -f1)
        fi
        if [[ $m == cp-durable && -n ${SAVE_SEGMENT:-} && ! -e ${SAVE_SEGMENT} ]]; then
            seg=$(find "$WORK/repo-$m" -name '0000000*' | sort | sed -n "$((n / 2))p")
            cp "$seg" "$SAVE_SEGMENT" && log "saved real segment $(basename "$seg") to $SAVE_SEGMENT"
        fi
        # cp repositories are kept until the end like the others: deleting 1 GB between rounds (ext4
        # with online discard here) slowed the following rounds.
        psql_q "CHECKPOINT" >/dev/null # recycles the archived segments
    done
done
set_archive_command ""

LOGERR=$(grep -cE 'archive command failed|archive command was terminated|FATAL|PANIC' "$WORK/pg.log" || true)
grep -vF 'parameter "archive_command" changed' "$WORK/pg.log" | grep -E 'archive command|FATAL|PANIC|ERROR|walrs (push|fetch):' | head -20 >&2 || true

# Summary table.
ref=${MLIST[0]}
medrate() { awk -F'\t' -v m="$1" '$2==m {print $7}' "$RESULTS" | median; }
refrate=$(medrate "$ref")
truerate=$(medrate true 2>/dev/null || echo nan)
echo
echo "# archive_drain: $(date -u +%Y-%m-%dT%H:%MZ), $(machine_line)"
echo "# walrs $WALRS_VERSION; $(pgbackrest version 2>/dev/null || echo 'pgbackrest: none'); PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
echo "# WORKLOAD=$WORKLOAD, $ROUNDS rounds, backlog $(awk -F'\t' '{print $3}' "$RESULTS" | minmax) segments, ROWS=$ROWS; PG log lines with archive errors: $LOGERR"
echo "# load average at start: $LOAD_START, at end: $(load_now) (other work on the machine inflates absolute times; compare within a run)"
printf '%-15s %6s %12s %14s %9s %9s %7s %14s %14s %16s\n' method rounds "median seg/s" "min..max" "x $ref" "x true" failed "stored/seg MiB" "CPU busy %" "path CPU ms/seg"
for m in "${MLIST[@]}"; do
    r=$(medrate "$m")
    nrounds=$(awk -F'\t' -v m="$m" '$2==m' "$RESULTS" | wc -l)
    mm=$(awk -F'\t' -v m="$m" '$2==m {print $7}' "$RESULTS" | minmax)
    failed=$(awk -F'\t' -v m="$m" '$2==m {s+=$5} END {print s+0}' "$RESULTS")
    narch=$(awk -F'\t' -v m="$m" '$2==m {s+=$4} END {print s+0}' "$RESULTS")
    case $m in
        true) per=- ;;
        *) per=$(awk -v b="${SAVED[$m]:-0}" -v n="$narch" 'BEGIN{printf "%.2f", b/n/1048576}') ;;
    esac
    busy=$(awk -F'\t' -v m="$m" '$2==m {print $11}' "$RESULTS")
    path=$(awk -F'\t' -v m="$m" '$2==m && $14 != "-" {print $14}' "$RESULTS")
    printf '%-15s %6s %12s %14s %9s %9s %7s %14s %14s %16s\n' "$m" "$nrounds" "$r" "$mm" \
        "$(awk -v a="$r" -v b="$refrate" 'BEGIN{printf "%.2f", a/b}')" \
        "$(awk -v a="$r" -v b="$truerate" 'BEGIN{ if (b+0>0) printf "%.2f", a/b; else print "-"}')" "$failed" "$per" \
        "$(median <<<"$busy") ($(minmax <<<"$busy"))" "$([[ -n $path ]] && echo "$(median <<<"$path") ($(minmax <<<"$path"))" || echo -)"
done
if [[ $CEILING == 1 && -d $WORK/ceiling ]]; then
    echo
    if [[ -n ${CEILING_BIN:-} ]]; then
        "$CEILING_BIN" "$WORK/ceiling" >"$WORK/ceiling.out" || die "codec_ceiling failed"
    else
        (cd "$BENCH_ROOT" && cargo bench -q --bench codec_ceiling -- "$WORK/ceiling") >"$WORK/ceiling.out" \
            || die "cargo bench --bench codec_ceiling failed"
    fi
    cat "$WORK/ceiling.out"
    ceil=$(awk '$1 == "zstd:1" {print $NF}' "$WORK/ceiling.out")
    # The same ceiling from its CPU cost: what both cores could do if nothing else ran (on a
    # shared machine the wall-clock figure above shrinks with the others' load, this one hardly).
    cpuceil=$(awk -v c="$(nproc)" '$1 == "zstd:1" {printf "%.1f", c * 1000 / $(NF-1)}' "$WORK/ceiling.out")
    for m in "${MLIST[@]}"; do
        [[ $m == walrs* ]] || continue
        echo "# $m median $(medrate "$m") seg/s = $(awk -v a="$(medrate "$m")" -v b="$ceil" 'BEGIN{printf "%.0f", 100*a/b}') % of the codec ceiling ($ceil seg/s, zstd:1 in process on $(nproc) cores, wall clock); $(awk -v a="$(medrate "$m")" -v b="$cpuceil" 'BEGIN{printf "%.0f", 100*a/b}') % of its CPU-time ceiling ($cpuceil seg/s = $(nproc) cores / its CPU ms per segment)"
    done
fi
if [[ $CPU_TIME == 1 ]]; then
    for m in "${MLIST[@]}"; do
        [[ $m == walrs* ]] && echo "# walrs CPU (user+sys) per archived segment, $m: median $(awk -F'\t' -v m="$m" '$2==m {print $12}' "$RESULTS" | median) ms, rounds $(awk -F'\t' -v m="$m" '$2==m {print $12}' "$RESULTS" | minmax) ms"
    done
fi
echo
echo "# per round (round method backlog archived failed seconds seg/s cpu-wait% io-wait% backlog-cached% cpu-busy% walrs-cpu-ms/segment s3-server-cpu-ms/segment archive-path-cpu-ms/segment):"
echo "#   (cpu-/io-wait: /proc/pressure 'some' share of the drain's wall time, all processes of the machine;"
echo "#    cpu-busy: non-idle share of both cores over the drain, /proc/stat, everything on the machine)"
sed 's/^/#   /' "$RESULTS"
