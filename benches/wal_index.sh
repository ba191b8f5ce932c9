#!/usr/bin/env bash
# The WAL index on an archive of >= 1,000 real segments, on a file-system repository and on an S3
# repository (the tests' s3s-fs server, examples/s3_server.rs, a separate process on 127.0.0.1),
# twice: as it is ("s3"), and with TCP_NODELAY set on its accepted sockets by an LD_PRELOAD shim
# ("s3nd"; without it every GET of an object body stalls ~40 ms in Nagle + delayed ACK on loopback):
# push rate with indexing, `walrs wal list [--json]`, `walrs timeline`, `walrs wal verify`,
# `walrs wal index --rebuild`; decode throughput of examples/wal_scan.rs on 1 MiB and 16 MiB
# segments; and (HOTPATH=1) benches/hotpath.sh for the per-push cost of a 16 MiB segment.
#
#   sudo benches/wal_index.sh            SEGS=1100 segments of 1 MiB, ~7 min (hotpath.sh included)
#   WALRS_BIN=/path/walrs EXAMPLES_DIR=/path/dir   (prebuilt walrs, s3_server and wal_scan: no build)
#   KEEP=1 (keep the temp dir)   HOTPATH=0 (skip hotpath.sh)
#   knobs: SCALE (60) PGBENCH_SECS (15) SCALE16 (30) LIST_RUNS (7) VERIFY_RUNS (3) S3_STOCK_VERIFY_RUNS (1)
#          HOTPATH_REPS (30) PG_PORT (5491) S3_PORT (9348; the TCP_NODELAY server uses S3_PORT+1)
#
# Segments: a PG15 cluster initialised with `initdb --wal-segsize=1` (1 MiB segments; as `postgres`,
# socket-only in /tmp, fsync=off: the cluster's own speed is not measured) archives with
# `cp %p DIR/%f` while it runs `pgbench -i -s SCALE`, `pgbench -T PGBENCH_SECS` (TPC-B, -c 4 -j 2)
# and then `CREATE TABLE AS ... repeat(md5(g::text),2)` batches until SEGS segments are written;
# `pg_switch_wal()`; wait until the last one is archived. Every archived segment is then pushed,
# in order, one `walrs push FILE` process at a time (as the archiver would), into a file-system
# repository, into s3://walrs-test/idx on the stock server and s3://walrs-test/idx on the TCP_NODELAY
# server (its own root). Then, alternating the repositories in each round:
#   wal list          the first run separately (no roll-up exists yet: it reads every summary and
#                     writes the roll-up), then LIST_RUNS warm runs; median
#   wal list --json   LIST_RUNS runs; the JSON is checked against the archive (segment count,
#                     first/last name, no gap, nothing damaged)
#   timeline          LIST_RUNS runs
#   wal verify        VERIFY_RUNS runs (reads and decodes every stored segment; S3_STOCK_VERIFY_RUNS on
#                     the stock S3 server, where it is slow); must exit 0, report N segments and no problem
#   wal index --rebuild   once, then one `wal list` after it
# Storage requests of one run of each command (strace, untimed): on S3 the HTTP requests walrs
# sends, by method (counted on the s3nd server: the client's requests do not depend on the server);
# on the file system the openat / getdents64 syscalls of walrs. Peak RSS (/usr/bin/time -f %M) of one
# `wal list` and one `wal verify`. CPU s = user+sys of the walrs process (bash `times`).
# Decode: target/release/examples/wal_scan DIR 5 on the 1 MiB archive, and on the 16 MiB segments of
# a second cluster (default segment size, pgbench -i -s SCALE16 + pgbench -T PGBENCH_SECS).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEGS=${SEGS:-1100}
SCALE=${SCALE:-60}
PGBENCH_SECS=${PGBENCH_SECS:-15}
SCALE16=${SCALE16:-30}
LIST_RUNS=${LIST_RUNS:-7}
VERIFY_RUNS=${VERIFY_RUNS:-3}
S3_STOCK_VERIFY_RUNS=${S3_STOCK_VERIFY_RUNS:-1}
HOTPATH=${HOTPATH:-1}
HOTPATH_REPS=${HOTPATH_REPS:-30}
PG_PORT=${PG_PORT:-5491}
S3_PORT=${S3_PORT:-9348}

need_root
apt_need /usr/bin/time time || die "cannot install time"
apt_need jq jq || die "cannot install jq"
STRACE=1
apt_need strace strace || { STRACE=; log "strace unavailable: no request counts"; }

LOAD_START=$(load_now)
make_workdir walrs-walidx
PG_SOCK=$WORK/s
D1=$WORK/d1
D16=$WORK/d16
SERVER_PIDS=()
stop_servers() {
    local p; for p in "${SERVER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    SERVER_PIDS=()
}
cleanup() {
    local rc=$?
    pg_stop "$D1" immediate
    pg_stop "$D16" immediate
    stop_servers
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT

# --- binaries --------------------------------------------------------------------------------
install -d -m 755 "$WORK/bin"
EXAMPLES_DIR=${EXAMPLES_DIR:-$BENCH_ROOT/target/release/examples}
if [[ -z ${WALRS_BIN:-} || ! -x $EXAMPLES_DIR/s3_server || ! -x $EXAMPLES_DIR/wal_scan ]]; then
    log "cargo build --release --bin walrs --example s3_server --example wal_scan"
    (cd "$BENCH_ROOT" && cargo build --release -q --bin walrs --example s3_server --example wal_scan) ||
        die "cargo build failed"
    EXAMPLES_DIR=$BENCH_ROOT/target/release/examples
    [[ -n ${WALRS_BIN:-} ]] || WALRS_BIN=$BENCH_ROOT/target/release/walrs
fi
install_walrs "$WORK/bin/walrs"
W=$WORK/bin/walrs
# Copies: the tree may be rebuilt while this runs.
install -m 755 "$EXAMPLES_DIR/s3_server" "$EXAMPLES_DIR/wal_scan" "$WORK/bin/"
log "walrs: $WALRS_VERSION"

# --- 1. >= SEGS real 1 MiB segments ----------------------------------------------------------
# pg_init of lib.sh with extra initdb arguments: pg_init_args DATA SOCK PORT "INITDB ARGS" CONF...
pg_init_args() {
    local data=$1 sock=$2 port=$3 iargs=$4; shift 4
    install -d -m 700 -o "$PG_USER" -g "$(id -gn "$PG_USER")" "$data"
    install -d -m 755 -o "$PG_USER" -g "$(id -gn "$PG_USER")" "$sock"
    # shellcheck disable=SC2086
    as_pg env -u PGDATA -u PGHOST -u PGPORT -u PGUSER LC_ALL=C.UTF-8 \
        "$PGBIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync $iargs >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$sock'"
        echo "wal_level = replica"
        echo "max_wal_senders = 10"
        local l; for l in "$@"; do echo "$l"; done
    } >>"$data/postgresql.conf"
}
segno() { echo $((16#${1:8:8} * ${2} + 16#${1:16:8})); } # segno NAME SEGS_PER_XLOGID
walfile() { psql_q "SELECT pg_walfile_name(pg_current_wal_insert_lsn())"; }
pgb() { "$PGBIN/pgbench" -h "$PG_SOCK" -p "$PG_PORT" -U postgres "$@" postgres >/dev/null 2>&1; }
wait_archived() { # wait_archived DIR NAME
    for _ in $(seq 1200); do [[ -e $1/$2 ]] && return 0; nap 0.1; done
    die "segment $2 was not archived within 120 s"
}
PG_CONF=("archive_mode = on" "max_wal_size = 8GB" "fsync = off" "synchronous_commit = off")

install -d -m 755 -o "$PG_USER" "$WORK/arch1" "$WORK/arch16"
log "cluster 1: initdb --wal-segsize=1, writing >= $SEGS segments of 1 MiB"
pg_init_args "$D1" "$PG_SOCK" "$PG_PORT" "--wal-segsize=1" "${PG_CONF[@]}" "archive_command = 'cp %p $WORK/arch1/%f'"
pg_start "$D1"
T_GEN=$EPOCHREALTIME
pgb -i -q -s "$SCALE"
pgb -n -c 4 -j 2 -T "$PGBENCH_SECS"
batch=0
while (($(segno "$(walfile)" 4096) < SEGS)); do
    batch=$((batch + 1))
    psql_q "CREATE TABLE fill$batch AS SELECT g, repeat(md5(g::text), 2) AS v FROM generate_series(1, 5e5) g" >/dev/null
done
LAST1=$(psql_q "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
psql_q "SELECT pg_switch_wal()" >/dev/null
wait_archived "$WORK/arch1" "$LAST1"
T_GEN=$(awk -v a="$T_GEN" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
pg_stop "$D1" fast
mapfile -t NAMES < <(ls "$WORK/arch1" | grep -E '^[0-9A-F]{24}$' | sort)
N=${#NAMES[@]}
FIRST1=${NAMES[0]}
LAST1=${NAMES[N - 1]}
(($(segno "$LAST1" 4096) - $(segno "$FIRST1" 4096) + 1 == N)) || die "archive of cluster 1 is not contiguous"
ARCH_BYTES=$(du -sb "$WORK/arch1" | cut -f1)
log "cluster 1: $N segments $FIRST1 .. $LAST1 in ${T_GEN} s (CTAS batches: $batch)"

# --- 2. push into a file-system and an S3 repository ------------------------------------------
start_s3() { # start_s3 ROOT PORT [LD_PRELOAD]
    install -d "$1"
    if [[ -n ${3:-} ]]; then LD_PRELOAD=$3 "$WORK/bin/s3_server" "$1" "$2" >"$1.out" 2>&1 &
    else "$WORK/bin/s3_server" "$1" "$2" >"$1.out" 2>&1 & fi
    SERVER_PIDS+=($!)
    for _ in $(seq 50); do grep -q http "$1.out" 2>/dev/null && break; nap 0.1; done
    grep -q http "$1.out" || die "s3_server did not start: $(cat "$1.out")"
}
cat >"$WORK/nodelay.c" <<'EOF'
/* LD_PRELOAD: TCP_NODELAY on every accepted socket (the server writes a response's head and body
   separately; without it the body waits for the ACK of the head, which loopback delays ~40 ms) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static int nd(int fd) { int one = 1; if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); return fd; }
int accept4(int s, struct sockaddr *a, socklen_t *l, int f) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    return nd(real(s, a, l, f));
}
int accept(int s, struct sockaddr *a, socklen_t *l) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    return nd(real(s, a, l));
}
EOF
export AWS_ACCESS_KEY_ID=walrs-test-access-key AWS_SECRET_ACCESS_KEY=walrs-test-secret-key-0123456789
unset WALRS_REPO WALRS_CONFIG WALRS_COMPRESSION WALRS_ENCRYPTION_KEY WALRS_ENCRYPTION_KEY_FILE WALRS_S3_ENDPOINT || true
declare -A REPO=([fs]=$WORK/fsrepo [s3]=s3://walrs-test/idx [s3nd]=s3://walrs-test/idx)
declare -A EP=([fs]= [s3]=http://127.0.0.1:$S3_PORT [s3nd]=http://127.0.0.1:$((S3_PORT + 1)))
declare -A KLABEL=([fs]="file system" [s3]="S3 (s3_server)" [s3nd]="S3 (s3_server+NODELAY)")
KINDS=(fs s3)
start_s3 "$WORK/s3root" "$S3_PORT"
if command -v cc >/dev/null 2>&1 && cc -O2 -shared -fPIC -o "$WORK/bin/nodelay.so" "$WORK/nodelay.c" -ldl 2>/dev/null; then
    start_s3 "$WORK/s3root-nd" "$((S3_PORT + 1))" "$WORK/bin/nodelay.so"
    KINDS+=(s3nd)
else
    log "no C compiler: no TCP_NODELAY server (s3nd)"
fi
wr() { # wr KIND walrs-args...: walrs on that repository
    local k=$1; shift
    WALRS_REPO=${REPO[$k]} WALRS_S3_ENDPOINT=${EP[$k]} "$W" "$@"
}
install -d "$WORK/fsrepo" "$WORK/out"
ANOMALIES=$WORK/anomalies.txt
: >"$ANOMALIES"
anomaly() { log "ANOMALY: $*"; echo "$*" >>"$ANOMALIES"; }

declare -A PUSH_S
for k in "${KINDS[@]}"; do
    log "pushing $N segments into $k (${REPO[$k]}), one process each"
    : >"$WORK/push-$k.ms"
    t0=$EPOCHREALTIME
    for n in "${NAMES[@]}"; do
        s=${EPOCHREALTIME/./}
        wr "$k" push "$WORK/arch1/$n" 2>>"$WORK/push-$k.err" || die "push of $n to $k failed: $(tail -3 "$WORK/push-$k.err")"
        e=${EPOCHREALTIME/./}
        echo $(((e - s) / 1000)).$(((e - s) % 1000 / 100)) >>"$WORK/push-$k.ms"
    done
    PUSH_S[$k]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
    [[ -s $WORK/push-$k.err ]] && anomaly "push to $k wrote to stderr: $(sort "$WORK/push-$k.err" | uniq -c | sort -rn | head -3 | tr '\n' ' ')"
done
FS_INDEX_OBJS=$(find "$WORK/fsrepo/index/seg" -type f | wc -l)
FS_INDEX_BYTES=$(du -sb "$WORK/fsrepo/index" | cut -f1)
FS_WAL_BYTES=$(du -sb "$WORK/fsrepo/wal" | cut -f1)
((FS_INDEX_OBJS == N)) || anomaly "fs repository holds $FS_INDEX_OBJS segment summaries for $N pushed segments"

# --- 3. list / timeline / verify / rebuild ---------------------------------------------------
TIMES=$WORK/times.tsv
: >"$TIMES"
cpu_of_children() { # FILE: CPU seconds (user+sys) of the finished children, from `times` written there
    awk 'NR==2 {t=0; for (i=1;i<=2;i++) {split($i,a,/[ms]/); t+=a[1]*60+a[2]} printf "%.3f", t}' "$1"
}
run_t() { # run_t LABEL KIND OUTFILE args...   -> TIMES: label kind seconds rc cpu-seconds
    local label=$1 k=$2 out=$3 s e rc=0; shift 3
    times >"$WORK/times0" # the builtin, in this shell (not in a $(...) subshell)
    s=$EPOCHREALTIME
    wr "$k" "$@" >"$out" 2>"$out.err" || rc=$?
    e=$EPOCHREALTIME
    times >"$WORK/times1"
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$k" "$(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.4f", b-a}')" "$rc" \
        "$(awk -v a="$(cpu_of_children "$WORK/times0")" -v b="$(cpu_of_children "$WORK/times1")" 'BEGIN{printf "%.3f", b-a}')" >>"$TIMES"
    ((rc == 0)) || anomaly "$k: walrs $* exited $rc: $(head -c 300 "$out.err" | tr '\n' ' ')"
    [[ ! -s $out.err ]] || anomaly "$k: walrs $* wrote to stderr: $(head -c 300 "$out.err" | tr '\n' ' ')"
    return 0
}
check_list_json() { # KIND FILE: the JSON must show exactly the archive
    local k=$1 f=$2 got
    got=$(jq -r '[length, (.[0].ranges | length), .[0].ranges[0].first, .[0].ranges[0].last, .[0].ranges[0].segments,
        (.[0].gaps | length), ([.[].ranges[].damaged | length] | add), (.[0].partials | length)] | @tsv' "$f" 2>/dev/null) ||
        { anomaly "$k: wal list --json is not the expected JSON: $(head -c 200 "$f")"; return; }
    [[ $got == "$(printf '1\t1\t%s\t%s\t%s\t0\t0\t0' "$FIRST1" "$LAST1" "$N")" ]] ||
        anomaly "$k: wal list --json says (timelines, ranges, first, last, segments, gaps, damaged, partials) = ($got), the archive is (1, 1, $FIRST1, $LAST1, $N, 0, 0, 0)"
}
log "wal list (cold, builds the roll-ups)"
for k in "${KINDS[@]}"; do run_t list-cold "$k" "$WORK/out/list-cold-$k.txt" wal list; done
log "wal list / list --json / timeline: $LIST_RUNS runs each"
for ((i = 1; i <= LIST_RUNS; i++)); do
    ks=("${KINDS[@]}"); ((i % 2)) || mapfile -t ks < <(printf '%s\n' "${KINDS[@]}" | tac)
    for k in "${ks[@]}"; do
        run_t list "$k" "$WORK/out/list-$k.txt" wal list
        run_t list-json "$k" "$WORK/out/list-$k.json" wal list --json
        run_t timeline "$k" "$WORK/out/timeline-$k.txt" timeline
    done
done
for k in "${KINDS[@]}"; do
    check_list_json "$k" "$WORK/out/list-$k.json"
    cmp -s "$WORK/out/list-cold-$k.txt" "$WORK/out/list-$k.txt" || anomaly "$k: cold and warm wal list differ"
done
for k in "${KINDS[@]}"; do
    cmp -s "$WORK/out/list-fs.json" "$WORK/out/list-$k.json" || anomaly "wal list --json differs between fs and $k"
done
log "wal verify: $VERIFY_RUNS runs each ($S3_STOCK_VERIFY_RUNS on s3)"
for ((i = 1; i <= VERIFY_RUNS; i++)); do
    ks=("${KINDS[@]}"); ((i % 2)) || mapfile -t ks < <(printf '%s\n' "${KINDS[@]}" | tac)
    for k in "${ks[@]}"; do
        [[ $k == s3 ]] && ((i > S3_STOCK_VERIFY_RUNS)) && continue
        run_t verify "$k" "$WORK/out/verify-$k.txt" wal verify
    done
done
for k in "${KINDS[@]}"; do
    v=$(tail -1 "$WORK/out/verify-$k.txt")
    [[ $v == "$N segment(s), "*" record(s) on timeline(s) [1]: ok" && $(wc -l <"$WORK/out/verify-$k.txt") == 1 ]] ||
        anomaly "$k: wal verify on a clean archive of $N segments says: $(head -c 400 "$WORK/out/verify-$k.txt" | tr '\n' ' ')"
done
log "wal index --rebuild, then wal list"
for k in "${KINDS[@]}"; do
    run_t rebuild "$k" "$WORK/out/rebuild-$k.txt" wal index --rebuild
    run_t list-after-rebuild "$k" "$WORK/out/list-rebuilt-$k.json" wal list --json
    check_list_json "$k" "$WORK/out/list-rebuilt-$k.json"
    cmp -s "$WORK/out/list-rebuilt-$k.json" "$WORK/out/list-$k.json" || anomaly "$k: wal list --json differs after wal index --rebuild"
done

# Storage requests of one run of each command (untimed, under strace).
declare -A REQ
count_req() { # KIND LABEL args...
    local k=$1 label=$2; shift 2
    [[ -n $STRACE ]] || { REQ[$label-$k]=-; return; }
    WALRS_REPO=${REPO[$k]} WALRS_S3_ENDPOINT=${EP[$k]} strace -f -qq -s 12 -e trace=openat,getdents64,sendto,write,writev \
        -o "$WORK/strace.txt" "$W" "$@" >/dev/null 2>&1 || true
    if [[ $k == s3* ]]; then
        REQ[$label-$k]=$(grep -oE '"(GET|PUT|HEAD|POST|DELETE) /' "$WORK/strace.txt" | tr -d '"/' | sort | uniq -c |
            awk '{t+=$1; s=s sep $1 " " $2; sep=", "} END {printf "%d (%s)", t, s}')
    else
        REQ[$label-$k]=$(awk '/openat\(/ && !/ENOENT/ && !/\/(proc|sys|etc|lib|usr)\// {o++} /getdents64\(/ {d++}
            END {printf "%d openat, %d getdents64", o, d}' "$WORK/strace.txt")
    fi
}
RK=(fs); [[ " ${KINDS[*]} " == *" s3nd "* ]] && RK+=(s3nd) || RK+=(s3)
declare -A RSS
for k in "${RK[@]}"; do
    for l in list verify; do # peak RSS, one untimed run each
        WALRS_REPO=${REPO[$k]} WALRS_S3_ENDPOINT=${EP[$k]} /usr/bin/time -o "$WORK/rss" -f %M "$W" wal "$l" >/dev/null 2>&1 || true
        RSS[$l-$k]=$(awk '{printf "%.1f MiB", $1/1024}' "$WORK/rss")
    done
    count_req "$k" list wal list
    count_req "$k" timeline timeline
    count_req "$k" verify wal verify
    # push: a fresh repository, first segment untraced (it creates the repository config)
    REPO[$k-probe]=${REPO[$k]}-probe EP[$k-probe]=${EP[$k]}
    [[ $k == fs ]] && install -d "${REPO[$k-probe]}"
    wr "$k-probe" push "$WORK/arch1/${NAMES[0]}"
    count_req "$k-probe" push push "$WORK/arch1/${NAMES[1]}"
    REQ[push-$k]=${REQ[push-$k-probe]}
done
RQS=${RK[1]}

# --- 4. decode throughput ----------------------------------------------------------------------
log "wal_scan on the 1 MiB segments"
SCAN1=$("$WORK/bin/wal_scan" "$WORK/arch1" 5)
log "cluster 2: default 16 MiB segments, pgbench -i -s $SCALE16 + pgbench -T $PGBENCH_SECS"
pg_init_args "$D16" "$PG_SOCK" "$PG_PORT" "" "${PG_CONF[@]}" "archive_command = 'cp %p $WORK/arch16/%f'"
pg_start "$D16"
pgb -i -q -s "$SCALE16"
pgb -n -c 4 -j 2 -T "$PGBENCH_SECS"
L16=$(walfile)
psql_q "SELECT pg_switch_wal()" >/dev/null
wait_archived "$WORK/arch16" "$L16"
pg_stop "$D16" fast
N16=$(ls "$WORK/arch16" | grep -cE "^[0-9A-F]{24}$" || true)
((N16 >= 20)) || log "only $N16 segments of 16 MiB (wanted >= 20)"
SCAN16=$("$WORK/bin/wal_scan" "$WORK/arch16" 5)
[[ $SCAN1 == *" 0 segments with errors"* ]] || anomaly "wal_scan 1 MiB: $SCAN1"
[[ $SCAN16 == *" 0 segments with errors"* ]] || anomaly "wal_scan 16 MiB: $SCAN16"

# --- 5. push cost of a 16 MiB segment (with indexing): benches/hotpath.sh ----------------------
HOT=
if [[ $HOTPATH == 1 ]]; then
    stop_servers
    log "benches/hotpath.sh REPS=$HOTPATH_REPS PGBACKREST=0"
    REPS=$HOTPATH_REPS PGBACKREST=0 WALRS_BIN=$W KEEP=0 "$BENCH_ROOT/benches/hotpath.sh" >"$WORK/hotpath.out" ||
        die "hotpath.sh failed"
    HOT=$WORK/hotpath.out
fi

# --- report ------------------------------------------------------------------------------------
med() { awk -F'\t' -v l="$1" -v k="$2" '$1==l && $2==k {print $3}' "$TIMES" | median; }
rng() { awk -F'\t' -v l="$1" -v k="$2" '$1==l && $2==k {print $3}' "$TIMES" | minmax; }
cpu() { awk -F'\t' -v l="$1" -v k="$2" '$1==l && $2==k {print $5}' "$TIMES" | median; }
cnt() { awk -F'\t' -v l="$1" -v k="$2" '$1==l && $2==k' "$TIMES" | wc -l; }
mbps() { awk -v b="$ARCH_BYTES" -v s="$1" 'BEGIN{printf "%.0f", b/s/1e6}'; }

echo
echo "# wal_index: $(date -u +%Y-%m-%dT%H:%MZ), $(machine_line)"
echo "# walrs $WALRS_VERSION; PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
echo "# load average at start: $LOAD_START, at end: $(load_now)"
echo
echo "## archive: $N segments of 1 MiB ($FIRST1 .. $LAST1), $((ARCH_BYTES / 1048576)) MiB, written in $T_GEN s" \
    "(pgbench -i -s $SCALE, pgbench -T $PGBENCH_SECS, $batch CTAS batches of 5e5 rows)"
echo "## fs repository: WAL objects $((FS_WAL_BYTES / 1048576)) MiB, index $FS_INDEX_OBJS summaries, $((FS_INDEX_BYTES / 1024)) KiB with the roll-up"
echo
printf '%-32s %12s %12s %12s %12s\n' "push (one process per segment)" "total s" "segments/s" "median ms" "p90 ms"
for k in "${KINDS[@]}"; do
    printf '%-32s %12s %12.1f %12s %12s\n' "walrs push -> $k" "${PUSH_S[$k]}" \
        "$(awk -v n="$N" -v s="${PUSH_S[$k]}" 'BEGIN{print n/s}')" "$(median <"$WORK/push-$k.ms")" \
        "$(sort -g "$WORK/push-$k.ms" | awk '{a[NR]=$1} END {print a[int((NR-1)*0.9)+1]}')"
done
echo
printf '%-20s' command
for k in "${KINDS[@]}"; do printf ' | %-4s %4s %9s %15s %7s %6s' "$k" runs "median s" "min..max" "CPU s" "MB/s"; done
echo
for l in list-cold list list-json timeline verify rebuild list-after-rebuild; do
    printf '%-20s' "$l"
    for k in "${KINDS[@]}"; do
        m=$(med "$l" "$k")
        r=-; case $l in verify | rebuild) [[ $m == nan ]] || r=$(mbps "$m") ;; esac
        printf ' | %-4s %4s %9s %15s %7s %6s' "$k" "$(cnt "$l" "$k")" "$m" "$(rng "$l" "$k")" "$(cpu "$l" "$k")" "$r"
    done
    echo
done
echo "(CPU s: user+sys of walrs, median; MB/s: MB of WAL read per second; s3 = the stock test server, s3nd = the same with TCP_NODELAY)"
echo
echo "## storage requests of one run (s3: HTTP requests sent by walrs, counted on $RQS; fs: openat outside /proc,/sys,/etc,/lib,/usr + getdents64)"
for l in push list timeline verify; do
    printf '%-10s fs: %-32s s3: %s\n' "$l" "${REQ[$l-fs]}" "${REQ[$l-$RQS]}"
done
echo "peak RSS: wal list fs ${RSS[list-fs]}, s3 ${RSS[list-$RQS]}; wal verify fs ${RSS[verify-fs]}, s3 ${RSS[verify-$RQS]}"
echo
echo "## wal list (fs):"
sed 's/^/    /' "$WORK/out/list-fs.txt"
echo "## wal verify (fs): $(tail -1 "$WORK/out/verify-fs.txt")"
echo "## timeline (fs): $(head -3 "$WORK/out/timeline-fs.txt" | tr '\n' ' ')"
echo
echo "## decode (examples/wal_scan DIR 5, one thread, best of 5)"
echo "1 MiB segments:  $SCAN1"
echo "16 MiB segments: $SCAN16"
if [[ -n $HOT ]]; then
    echo
    echo "## benches/hotpath.sh (REPS=$HOTPATH_REPS PGBACKREST=0; walrs push now indexes the segment while it streams it)"
    grep -E '^## segment|^operation|^dd conv=fsync|^walrs (push|fetch) zstd:1 |^## no-op' "$HOT"
    sed -n '/^## targets/,$p' "$HOT"
fi
echo
echo "## targets"
for k in "${KINDS[@]}"; do
    lw=$(med list "$k"); lc=$(med list-cold "$k")
    printf 'wal list well under 1 s on %d segments, %s: warm %s s (%s), first run (builds the roll-up) %s s (%s)\n' "$N" "${KLABEL[$k]}" \
        "$lw" "$(awk -v a="$lw" 'BEGIN{print (a < 0.5) ? "met" : "MISSED"}')" "$lc" "$(awk -v a="$lc" 'BEGIN{print (a < 1) ? "met" : "MISSED"}')"
done
for x in "1 MiB:$SCAN1" "16 MiB:$SCAN16"; do
    r=$(grep -oE '= [0-9]+ MB/s' <<<"${x#*:}" | tr -dc 0-9)
    printf 'decode >= 1 GB/s on one core (%s segments): %s MB/s (%s)\n' "${x%%:*}" "$r" "$(awk -v r="$r" 'BEGIN{print (r >= 1000) ? "met" : "MISSED"}')"
done
echo
if [[ -s $ANOMALIES ]]; then
    echo "## anomalies"
    sed 's/^/- /' "$ANOMALIES"
else
    echo "## anomalies: none (every command exited 0 with an empty stderr; list/verify agree with the archive)"
fi
