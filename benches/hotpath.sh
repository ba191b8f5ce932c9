#!/usr/bin/env bash
# Per-segment cost of one `walrs push` and one `walrs fetch` of a real 16 MiB WAL segment, process
# start included, against a plain durable copy of the same file on the same disk; peak RSS; exec
# time of a no-op. Everything is measured side by side in one run, operations alternating.
#
#   sudo benches/hotpath.sh                      # REPS=40, ~2-3 min
#   REPS=100 benches/hotpath.sh
#   WALRS_BIN=/path/to/walrs   (skip `cargo build --release`)    KEEP=1 (keep the temp dir)
#   SAVE_SEGMENTS_DIR=/dir     (copy the real segments used there, e.g. for WALRS_BENCH_SEGMENT)
#
# Real segments: a PG15 cluster (initdb as `postgres`, socket-only in /tmp) archives with
# `cp %p DIR/%f` while it writes (1) "bulk": CREATE TABLE AS ... repeat(md5(g::text),2) (1.5e6 rows)
# and (2) "oltp": pgbench -i -s 10, CHECKPOINT, then pgbench TPC-B (-c 4 -j 2) until two more
# segments are full. One segment written entirely by each phase is used.
#
# Operations (each rep runs every one once, order reversed on odd reps; the destination or stored
# object is removed before each, untimed):
#   push/zstd:1, push/lz4, push/none, push/zstd:1+aes   walrs push SEG  (repos repo-zstd, repo-lz4,
#                                                        repo-none, repo-enc with WALRS_ENCRYPTION_KEY)
#   fetch/...                                           walrs fetch NAME DIR/RECOVERYXLOG
#   dd-fsync        dd if=SRC of=DST bs=1M conv=fsync status=none   (write + fsync of the file)
#   peer-pgbr       pgBackRest archive-push / archive-get (zst level 1, own repo, run as root), if it is
#                   installed or installable (PGBACKREST=0 skips it)
#   durable-copy    a 30-line C program: copy to DST.tmp with 1 MiB read/write, fsync, rename,
#                   fsync the directory (what walrs does to make an object durable, minus the codec)
#   push baseline source = the segment in pg_wal; fetch baseline source = an uncompressed copy in
#   the repository directory. Timing: bash $EPOCHREALTIME around the command (fork+exec included).
# Peak RSS: /usr/bin/time -f %M (= "Maximum resident set size" of time -v), RSS_REPS runs each.
# No-op exec: hyperfine -N --warmup 20 --runs 300 'walrs --version' (and /bin/true for scale).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPS=${REPS:-40}
RSS_REPS=${RSS_REPS:-5}
PG_PORT=${PG_PORT:-5489}

need_root
apt_need /usr/bin/time time || die "cannot install time"
apt_need hyperfine hyperfine || log "hyperfine unavailable: falling back to a bash loop for the no-op exec"
apt_need jq jq || true
PGBR=
if [[ ${PGBACKREST:-1} == 1 ]] && apt_need pgbackrest pgbackrest; then PGBR=1; else log "pgBackRest unavailable: no peer rows"; fi

LOAD_START=$(load_now)
make_workdir walrs-hotpath
PG_SOCK=$WORK/s
DATA=$WORK/data
cleanup() {
    local rc=$?
    pg_stop "$DATA" immediate
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT

install -d -m 755 "$WORK/bin"
install_walrs "$WORK/bin/walrs"
W=$WORK/bin/walrs
log "walrs: $WALRS_VERSION"

# --- real segments ---------------------------------------------------------------------------
install -d -m 755 -o "$PG_USER" "$WORK/segs"
pg_init "$DATA" "$PG_SOCK" "$PG_PORT" "archive_mode = on" "archive_command = 'cp %p $WORK/segs/%f'" \
    "max_wal_size = 2GB"
pg_start "$DATA"
walfile() { psql_q "SELECT pg_walfile_name(pg_current_wal_insert_lsn())"; }
next_seg() { printf '%s%08X' "${1:0:16}" $((16#${1:16:8} + $2)); }
log "writing WAL (bulk, then oltp)"
b0=$(walfile)
psql_q "CREATE TABLE t AS SELECT g, repeat(md5(g::text), 2) AS v FROM generate_series(1, 1.5e6) g" >/dev/null
b1=$(walfile)
"$PGBIN/pgbench" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -i -q -s 10 postgres >/dev/null 2>&1
psql_q "CHECKPOINT" >/dev/null
o0=$(walfile)
while [[ $(walfile) < $(next_seg "$o0" 3) ]]; do
    "$PGBIN/pgbench" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -n -c 4 -j 2 -T 5 postgres >/dev/null 2>&1
done
psql_q "SELECT pg_switch_wal()" >/dev/null
if [[ -n $PGBR ]]; then # peer: pgBackRest 2.x, run as root like the other commands, own repository
    install -d "$WORK/pgbr" "$WORK/pgbr/repo" "$WORK/pgbr/log" "$WORK/pgbr/lock" "$WORK/pgbr/spool"
    PGBR_CONF=$WORK/pgbr/pgbackrest.conf
    printf '%s\n' "[global]" "repo1-path=$WORK/pgbr/repo" "log-path=$WORK/pgbr/log" "lock-path=$WORK/pgbr/lock" \
        "spool-path=$WORK/pgbr/spool" "compress-type=zst" "compress-level=1" "" "[bench]" "pg1-path=$DATA" \
        "pg1-port=$PG_PORT" "pg1-socket-path=$PG_SOCK" "pg1-user=postgres" >"$PGBR_CONF"
    pgbackrest --config="$PGBR_CONF" --stanza=bench stanza-create >/dev/null || die "pgbackrest stanza-create failed"
fi
BULK=$(next_seg "$b0" $(((16#${b1:16:8} - 16#${b0:16:8}) / 2)))
OLTP=$(next_seg "$o0" 1)
for s in "$BULK" "$OLTP"; do
    for _ in $(seq 600); do [[ -e $WORK/segs/$s ]] && break; nap 0.1; done
    [[ -e $WORK/segs/$s ]] || die "segment $s was not archived"
done
pg_stop "$DATA" fast
SEGS=("bulk:$BULK" "oltp:$OLTP")
if [[ -n ${SAVE_SEGMENTS_DIR:-} ]]; then
    mkdir -p "$SAVE_SEGMENTS_DIR"
    cp "$WORK/segs/$BULK" "$SAVE_SEGMENTS_DIR/bulk-$BULK"
    cp "$WORK/segs/$OLTP" "$SAVE_SEGMENTS_DIR/oltp-$OLTP"
    log "saved segments to $SAVE_SEGMENTS_DIR"
fi

# --- baselines -------------------------------------------------------------------------------
cat >"$WORK/dcp.c" <<'EOF'
/* durable copy: SRC -> DST.tmp, fsync, rename to DST, fsync the directory */
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static char buf[1 << 20];
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    char tmp[4096], d[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
    int in = open(argv[1], O_RDONLY), out = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (in < 0 || out < 0) { perror("open"); return 1; }
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        for (char *p = buf; n > 0;) { ssize_t w = write(out, p, n); if (w < 0) { perror("write"); return 1; } p += w; n -= w; }
    if (n < 0 || fsync(out) || close(out) || rename(tmp, argv[2])) { perror("copy"); return 1; }
    snprintf(d, sizeof d, "%s", argv[2]);
    int dfd = open(dirname(d), O_RDONLY | O_DIRECTORY);
    if (dfd < 0 || fsync(dfd)) { perror("fsync dir"); return 1; }
    return 0;
}
EOF
DCP=
if command -v cc >/dev/null 2>&1 && cc -O2 -o "$WORK/bin/dcp" "$WORK/dcp.c" 2>/dev/null; then
    DCP=$WORK/bin/dcp
else
    log "no C compiler: skipping the durable-copy baseline"
fi

# --- repositories ------------------------------------------------------------------------------
KEY=$(head -c 32 /dev/urandom | base64)
install -d "$WORK/wal" "$WORK/restore" "$WORK/repo-zstd" "$WORK/repo-lz4" "$WORK/repo-none" \
    "$WORK/repo-enc" "$WORK/copyrepo"
wenv() { # variant -> WENV (environment of walrs for that repository)
    case $1 in
        zstd) WENV=("WALRS_REPO=$WORK/repo-zstd") ;;
        lz4) WENV=("WALRS_REPO=$WORK/repo-lz4" WALRS_COMPRESSION=lz4) ;;
        none) WENV=("WALRS_REPO=$WORK/repo-none" WALRS_COMPRESSION=none) ;;
        enc) WENV=("WALRS_REPO=$WORK/repo-enc" "WALRS_ENCRYPTION_KEY=$KEY") ;;
    esac
}
run_walrs() { # variant, args...  (bash forks and execs walrs itself: no extra process)
    local v=$1; shift
    case $v in
        zstd) WALRS_REPO=$WORK/repo-zstd "$W" "$@" ;;
        lz4) WALRS_REPO=$WORK/repo-lz4 WALRS_COMPRESSION=lz4 "$W" "$@" ;;
        none) WALRS_REPO=$WORK/repo-none WALRS_COMPRESSION=none "$W" "$@" ;;
        enc) WALRS_REPO=$WORK/repo-enc WALRS_ENCRYPTION_KEY=$KEY "$W" "$@" ;;
    esac
}
pgbr() { pgbackrest --config="$PGBR_CONF" --stanza=bench "$@"; }
pgbr_obj() { echo "$WORK/pgbr/repo/archive/bench"/*/"${1:0:16}/$1"-*; }
VARIANTS=(zstd lz4 none enc)
declare -A VLABEL=([zstd]="zstd:1" [lz4]="lz4" [none]="none" [enc]="zstd:1+aes")
for kv in "${SEGS[@]}"; do
    s=${kv#*:}
    cp "$WORK/segs/$s" "$WORK/wal/$s"
    cp "$WORK/segs/$s" "$WORK/copyrepo/$s"
    for v in "${VARIANTS[@]}"; do run_walrs "$v" push "$WORK/wal/$s"; done
    [[ -z $PGBR ]] || pgbr archive-push "$WORK/wal/$s"
done
obj() { echo "$WORK/repo-$1/wal/${2:0:16}/$2"; }
for v in "${VARIANTS[@]}"; do [[ -f $(obj "$v" "$BULK") ]] || die "no object at $(obj "$v" "$BULK")"; done
sync

# --- timed loop --------------------------------------------------------------------------------
TIMES=$WORK/times.tsv
: >"$TIMES"
TIMEFORMAT='%3U %3S'
timed() { # label, command...   -> TIMES: segment, label, wall us, user+sys ms (bash `time`)
    local s e u sy
    s=${EPOCHREALTIME/./}
    { time "${@:2}" 2>&4; } 4>&2 2>"$WORK/tm" || die "$1 failed"
    e=${EPOCHREALTIME/./}
    read -r u sy <"$WORK/tm"
    printf '%s\t%s\t%s\t%s\n' "$SEGKIND" "$1" "$((e - s))" "$(awk -v u="$u" -v s="$sy" 'BEGIN{print (u+s)*1000}')" >>"$TIMES"
}
op() { # name
    local s=$SEG
    case $1 in
        push-*)
            rm -f "$(obj "${1#push-}" "$s")"
            timed "$1" run_walrs "${1#push-}" push "$WORK/wal/$s" ;;
        fetch-*)
            rm -f "$WORK/restore/RECOVERYXLOG"
            timed "$1" run_walrs "${1#fetch-}" fetch "$s" "$WORK/restore/RECOVERYXLOG" ;;
        base-push-dd)
            rm -f "$WORK/copyrepo/out"
            timed "$1" dd if="$WORK/wal/$s" of="$WORK/copyrepo/out" bs=1M conv=fsync status=none ;;
        base-push-dcp)
            rm -f "$WORK/copyrepo/out"
            timed "$1" "$DCP" "$WORK/wal/$s" "$WORK/copyrepo/out" ;;
        base-fetch-dd)
            rm -f "$WORK/restore/RECOVERYXLOG"
            timed "$1" dd if="$WORK/copyrepo/$s" of="$WORK/restore/RECOVERYXLOG" bs=1M conv=fsync status=none ;;
        base-fetch-dcp)
            rm -f "$WORK/restore/RECOVERYXLOG"
            timed "$1" "$DCP" "$WORK/copyrepo/$s" "$WORK/restore/RECOVERYXLOG" ;;
        peer-push-pgbr)
            rm -f $(pgbr_obj "$s")
            timed "$1" pgbr archive-push "$WORK/wal/$s" ;;
        peer-fetch-pgbr)
            rm -f "$WORK/restore/RECOVERYXLOG"
            timed "$1" pgbr archive-get "$s" "$WORK/restore/RECOVERYXLOG" ;;
    esac
}
OPS=(base-push-dd)
[[ -n $DCP ]] && OPS+=(base-push-dcp)
for v in "${VARIANTS[@]}"; do OPS+=("push-$v"); done
[[ -n $PGBR ]] && OPS+=(peer-push-pgbr)
for v in "${VARIANTS[@]}"; do OPS+=("fetch-$v"); done
[[ -n $PGBR ]] && OPS+=(peer-fetch-pgbr)
OPS+=(base-fetch-dd)
[[ -n $DCP ]] && OPS+=(base-fetch-dcp)
log "timing ${#OPS[@]} operations x $REPS reps x ${#SEGS[@]} segments"
for kv in "${SEGS[@]}"; do
    SEGKIND=${kv%%:*} SEG=${kv#*:}
    for o in "${OPS[@]}"; do op "$o"; done # warm-up, not recorded
done
: >"$TIMES"
for ((rep = 1; rep <= REPS; rep++)); do
    for kv in "${SEGS[@]}"; do
        SEGKIND=${kv%%:*} SEG=${kv#*:}
        if ((rep % 2)); then
            for ((i = ${#OPS[@]} - 1; i >= 0; i--)); do op "${OPS[$i]}"; done
        else
            for o in "${OPS[@]}"; do op "$o"; done
        fi
    done
done
# the last fetch must have produced the segment
cmp -s "$WORK/restore/RECOVERYXLOG" "$WORK/segs/$SEG" || die "fetched file differs from the segment"

# --- peak RSS ----------------------------------------------------------------------------------
RSS=$WORK/rss.tsv
: >"$RSS"
for ((i = 1; i <= RSS_REPS; i++)); do
    for kv in "${SEGS[@]}"; do
        SEGKIND=${kv%%:*} s=${kv#*:}
        for v in "${VARIANTS[@]}"; do
            rm -f "$(obj "$v" "$s")"
            wenv "$v"
            /usr/bin/time -o "$WORK/t" -f '%M %U %S %e' env "${WENV[@]}" "$W" push "$WORK/wal/$s"
            printf '%s\tpush-%s\t%s\n' "$SEGKIND" "$v" "$(cat "$WORK/t")" >>"$RSS"
            rm -f "$WORK/restore/RECOVERYXLOG"
            /usr/bin/time -o "$WORK/t" -f '%M %U %S %e' env "${WENV[@]}" "$W" fetch "$s" "$WORK/restore/RECOVERYXLOG"
            printf '%s\tfetch-%s\t%s\n' "$SEGKIND" "$v" "$(cat "$WORK/t")" >>"$RSS"
        done
        if [[ -n $PGBR ]]; then
            rm -f $(pgbr_obj "$s")
            /usr/bin/time -o "$WORK/t" -f '%M %U %S %e' pgbackrest --config="$PGBR_CONF" --stanza=bench archive-push "$WORK/wal/$s"
            printf '%s\tpeer-push-pgbr\t%s\n' "$SEGKIND" "$(cat "$WORK/t")" >>"$RSS"
            rm -f "$WORK/restore/RECOVERYXLOG"
            /usr/bin/time -o "$WORK/t" -f '%M %U %S %e' pgbackrest --config="$PGBR_CONF" --stanza=bench archive-get "$s" "$WORK/restore/RECOVERYXLOG"
            printf '%s\tpeer-fetch-pgbr\t%s\n' "$SEGKIND" "$(cat "$WORK/t")" >>"$RSS"
        fi
        rm -f "$WORK/copyrepo/out"
        /usr/bin/time -o "$WORK/t" -f '%M %U %S %e' dd if="$WORK/wal/$s" of="$WORK/copyrepo/out" bs=1M conv=fsync status=none
        printf '%s\tbase-push-dd\t%s\n' "$SEGKIND" "$(cat "$WORK/t")" >>"$RSS"
    done
done

# --- no-op exec ------------------------------------------------------------------------------
NOOP=
if command -v hyperfine >/dev/null 2>&1; then
    hyperfine -N --warmup 20 --runs 300 --export-json "$WORK/noop.json" "$W --version" /bin/true >/dev/null 2>&1
    NOOP_WALRS=$(jq '.results[0].median * 1000' "$WORK/noop.json")
    NOOP_TRUE=$(jq '.results[1].median * 1000' "$WORK/noop.json")
    NOOP="hyperfine -N --warmup 20 --runs 300"
    # Fixed cost of a command that opens the repository: fetch of a segment that is not there (exit 1).
    WALRS_REPO=$WORK/repo-zstd hyperfine -N -i --warmup 10 --runs 200 --export-json "$WORK/miss.json" \
        "$W fetch 0000000100000000000000FF $WORK/restore/missing" >/dev/null 2>&1
    NOOP_MISS=$(jq '.results[0].median * 1000' "$WORK/miss.json")
else
    for ((i = 0; i < 300; i++)); do
        s=${EPOCHREALTIME/./}; "$W" --version >/dev/null; e=${EPOCHREALTIME/./}; echo $((e - s))
    done | awk '{print $1/1000}' >"$WORK/noop.txt"
    NOOP_WALRS=$(median <"$WORK/noop.txt")
    for ((i = 0; i < 300; i++)); do
        s=${EPOCHREALTIME/./}; /bin/true; e=${EPOCHREALTIME/./}; echo $((e - s))
    done | awk '{print $1/1000}' >"$WORK/noop.txt"
    NOOP_TRUE=$(median <"$WORK/noop.txt")
    for ((i = 0; i < 200; i++)); do
        s=${EPOCHREALTIME/./}; run_walrs zstd fetch 0000000100000000000000FF "$WORK/restore/missing" 2>/dev/null || true; e=${EPOCHREALTIME/./}; echo $((e - s))
    done | awk '{print $1/1000}' >"$WORK/noop.txt"
    NOOP_MISS=$(median <"$WORK/noop.txt")
    NOOP="bash loop, 300 runs"
fi

# --- report ----------------------------------------------------------------------------------
ms() { awk -F'\t' -v k="$1" -v o="$2" '$1==k && $2==o {print $3/1000}' "$TIMES" | median; }
pct() { # p-th percentile
    awk -F'\t' -v k="$1" -v o="$2" '$1==k && $2==o {print $3/1000}' "$TIMES" | sort -g |
        awk -v p="$3" '{a[NR]=$1} END {i=int((NR-1)*p/100)+1; printf "%.1f", a[i]}'
}
rssmax() { awk -F'\t' -v k="$1" -v o="$2" '$1==k && $2==o {split($3,f," "); print f[1]/1024}' "$RSS" | sort -g | tail -1; }
cpu() { awk -F'\t' -v k="$1" -v o="$2" '$1==k && $2==o {print $4}' "$TIMES" | median; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%+.1f", a-b}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

echo
echo "# hotpath: $(date -u +%Y-%m-%dT%H:%MZ), $(machine_line)"
echo "# walrs $WALRS_VERSION; PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'); $REPS reps, medians in ms (p10-p90); RSS = max of $RSS_REPS runs"
echo "# load average at start: $LOAD_START, at end: $(load_now) (other work on the machine inflates absolute times; compare within a run)"
for kv in "${SEGS[@]}"; do
    k=${kv%%:*} s=${kv#*:}
    echo
    printf '## segment %s = %s; stored size:' "$k" "$s"
    [[ -z $PGBR ]] || printf ' pgBackRest zst:1 %.2f MiB;' "$(awk -v b="$(stat -c %s $(pgbr_obj "$s"))" 'BEGIN{print b/1048576}')"
    for v in "${VARIANTS[@]}"; do
        printf ' %s %.2f MiB (%.1f%%);' "${VLABEL[$v]}" "$(awk -v b="$(stat -c %s "$(obj "$v" "$s")")" 'BEGIN{print b/1048576}')" \
            "$(awk -v b="$(stat -c %s "$(obj "$v" "$s")")" 'BEGIN{print 100*b/16777216}')"
    done
    echo
    dd_push=$(ms "$k" base-push-dd)
    dd_fetch=$(ms "$k" base-fetch-dd)
    dcp_push=$([[ -n $DCP ]] && ms "$k" base-push-dcp || echo nan)
    dcp_fetch=$([[ -n $DCP ]] && ms "$k" base-fetch-dcp || echo nan)
    printf '%-24s %9s %14s %12s %9s %13s %10s %11s\n' operation "median ms" "p10-p90" "- dd-fsync" "x dd" "- dur.copy" "peak RSS" "CPU ms"
    for o in "${OPS[@]}"; do
        m=$(ms "$k" "$o")
        case $o in
            *push*) b=$dd_push; c=$dcp_push ;;
            *) b=$dd_fetch; c=$dcp_fetch ;;
        esac
        label=$o
        case $o in
            push-* | fetch-*) label="walrs ${o%%-*} ${VLABEL[${o#*-}]}" ;;
            base-push-dd) label="dd conv=fsync (push)" ;;
            base-fetch-dd) label="dd conv=fsync (fetch)" ;;
            base-push-dcp) label="durable copy (push)" ;;
            base-fetch-dcp) label="durable copy (fetch)" ;;
            peer-push-pgbr) label="pgBackRest push zst:1" ;;
            peer-fetch-pgbr) label="pgBackRest get" ;;
        esac
        r=$(rssmax "$k" "$o"); c2=$(cpu "$k" "$o")
        printf '%-24s %9.1f %14s %12s %9s %13s %10s %11s\n' "$label" "$m" "$(pct "$k" "$o" 10)-$(pct "$k" "$o" 90)" \
            "$(sub "$m" "$b")" "$(ratio "$m" "$b")" "$(sub "$m" "$c")" \
            "$([[ -n $r ]] && printf '%.1f MiB' "$r" || echo -)" "$c2"
    done
done
echo
printf '## no-op exec (%s): walrs --version %.2f ms, /bin/true %.2f ms; fetch of a missing segment (config read, exit 1) %.2f ms\n' "$NOOP" "$NOOP_WALRS" "$NOOP_TRUE" "$NOOP_MISS"
echo
echo "## targets (segment bulk / oltp): overhead = walrs median - dd conv=fsync median"
for kv in "${SEGS[@]}"; do
    k=${kv%%:*}
    po=$(sub "$(ms "$k" push-zstd)" "$(ms "$k" base-push-dd)")
    fo=$(sub "$(ms "$k" fetch-zstd)" "$(ms "$k" base-fetch-dd)")
    pe=$(sub "$(ms "$k" push-enc)" "$(ms "$k" base-push-dd)")
    fe=$(sub "$(ms "$k" fetch-enc)" "$(ms "$k" base-fetch-dd)")
    rp=$(rssmax "$k" push-zstd); rf=$(rssmax "$k" fetch-zstd); rpe=$(rssmax "$k" push-enc); rfe=$(rssmax "$k" fetch-enc)
    verdict() { awk -v a="$1" -v t="$2" 'BEGIN{print (a+0 <= t) ? "met" : "MISSED"}'; }
    printf '%-5s push overhead  <= 25 ms: zstd:1 %s ms (%s), +aes %s ms (%s)\n' "$k" "$po" "$(verdict "$po" 25)" "$pe" "$(verdict "$pe" 25)"
    printf '%-5s fetch overhead <= 15 ms: zstd:1 %s ms (%s), +aes %s ms (%s)\n' "$k" "$fo" "$(verdict "$fo" 15)" "$fe" "$(verdict "$fe" 15)"
    printf '%-5s peak RSS <= 12 MB: push %.1f MiB (%s), fetch %.1f MiB (%s), +aes push %.1f fetch %.1f MiB\n' "$k" \
        "$rp" "$(verdict "$(awk -v r="$rp" 'BEGIN{print r*1.048576}')" 12)" "$rf" "$(verdict "$(awk -v r="$rf" 'BEGIN{print r*1.048576}')" 12)" "$rpe" "$rfe"
done
printf 'no-op exec <= 2 ms: %.2f ms (%s)\n' "$NOOP_WALRS" "$(awk -v a="$NOOP_WALRS" 'BEGIN{print (a <= 2) ? "met" : "MISSED"}')"
