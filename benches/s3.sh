#!/usr/bin/env bash
# walrs on an S3 repository served by a local S3-compatible server (the tests' s3s-fs server,
# examples/s3_server.rs, a separate process on 127.0.0.1): sequential `walrs push` and `walrs fetch`
# of N 16 MiB segments (segments/s), the same on a file-system repository in the same run for scale,
# peak RSS of one push/fetch, and the peak RSS of a multi-GiB streamed multipart upload.
#
#   sudo benches/s3.sh           N=40 segments, uploads of 1 and 4 GiB (GIBS="1 4")
#   SEGMENT=/path/real-segment   template segment (default: synthetic md5-text WAL-like data)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-40}
GIBS=${GIBS:-"1 4"}
PORT=${S3_PORT:-9347}
[[ $(id -u) -eq 0 ]] || die "run as root"
apt_need /usr/bin/time time || die "cannot install time"

make_workdir walrs-s3bench
cleanup() {
    local rc=$?
    [[ -n ${SERVER_PID:-} ]] && kill "$SERVER_PID" 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
install -d "$WORK/bin" "$WORK/wal" "$WORK/fsrepo" "$WORK/out" "$WORK/s3root"
install_walrs "$WORK/bin/walrs"
W=$WORK/bin/walrs
(cd "$BENCH_ROOT" && cargo build --release -q --example s3_server --example s3_stream_upload) || die "building the examples failed"
"$BENCH_ROOT/target/release/examples/s3_server" "$WORK/s3root" "$PORT" >"$WORK/server.out" 2>&1 &
SERVER_PID=$!
for _ in $(seq 50); do grep -q http "$WORK/server.out" 2>/dev/null && break; nap 0.1; done
ENDPOINT=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=walrs-test-access-key AWS_SECRET_ACCESS_KEY=walrs-test-secret-key-0123456789
export WALRS_S3_ENDPOINT=$ENDPOINT

log "making $N segments"
python3 - "$WORK/wal" "$N" "${SEGMENT:-}" <<'PY'
import hashlib, struct, sys
out, n, tmpl = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seg = 16 * 1024 * 1024
if tmpl:
    base = bytearray(open(tmpl, 'rb').read())
else:
    # WAL-like: 8 KiB pages of md5-text tuples with small headers, as a bulk load writes.
    base = bytearray()
    i = 0
    while len(base) < seg:
        page = bytearray(struct.pack('<HHIQI4x', 0xD110, 0, 1, 0, 0))
        while len(page) < 8192 - 100:
            h = hashlib.md5(str(i).encode()).hexdigest().encode()
            page += struct.pack('<IIQ', len(h) * 2 + 24, i, i * 7) + h + h
            i += 1
        base += page.ljust(8192, b'\0')
    base = base[:seg]
sysid = 7300000000000000001
for k in range(1, n + 1):
    b = bytearray(base)
    b[0:40] = struct.pack('<HHIQI4xQII', 0xD110, 2, 1, k * seg, 0, sysid, seg, 8192)
    open(f"{out}/{1:08X}{0:08X}{k:08X}", 'wb').write(b)
PY
NAMES=$(ls "$WORK/wal")

run_all() { # run_all REPO VERB -> seconds for all N
    local repo=$1 verb=$2 t0 t1 n
    t0=$EPOCHREALTIME
    for n in $NAMES; do
        if [[ $verb == push ]]; then WALRS_REPO=$repo "$W" push "$WORK/wal/$n"
        else WALRS_REPO=$repo "$W" fetch "$n" "$WORK/out/RECOVERYXLOG"; fi
    done
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}'
}

declare -A T
for round in 1 2 3; do
    for repo in "s3://walrs-test/r$round" "$WORK/fsrepo/r$round"; do
        [[ $repo == /* ]] && install -d "$repo"
        kind=${repo%%:*}; [[ $kind == s3 ]] || kind=fs
        T[$kind-push]+="$(run_all "$repo" push) "
        T[$kind-fetch]+="$(run_all "$repo" fetch) "
    done
done
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
N1=$(echo "$NAMES" | head -1)
RSS_PUSH=$(WALRS_REPO=s3://walrs-test/rss rss "$W" push "$WORK/wal/$N1")
RSS_FETCH=$(WALRS_REPO=s3://walrs-test/rss rss "$W" fetch "$N1" "$WORK/out/x")
STORED=$(du -sb "$WORK/s3root/walrs-test/r1" | cut -f1)

echo
echo "== walrs on S3 (s3s-fs on 127.0.0.1) vs file-system repository; $N segments of 16 MiB, 3 rounds"
machine_line
printf '%-10s %-6s %12s %12s\n' repo op "median s" "segments/s"
for k in s3-push s3-fetch fs-push fs-fetch; do
    med=$(echo "${T[$k]}" | tr ' ' '\n' | grep . | median)
    printf '%-10s %-6s %12s %12.1f\n' "${k%-*}" "${k#*-}" "$med" "$(awk -v n="$N" -v s="$med" 'BEGIN{print n/s}')"
done
echo "stored per round on S3: $((STORED / 1048576)) MiB for $((N * 16)) MiB of WAL"
echo "peak RSS: push ${RSS_PUSH} KiB, fetch ${RSS_FETCH} KiB (S3)"
for g in $GIBS; do
    "$BENCH_ROOT/target/release/examples/s3_stream_upload" "$ENDPOINT" "$g"
done
