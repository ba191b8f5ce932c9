#!/usr/bin/env bash
# `walrs status` and `walrs metrics` on a synthetic file-system repository of SEGS (100,000)
# segments of 16 MiB (examples/status_repo.rs: two timelines, a gap, a backup every 3,000
# segments, every segment with its object and its index summary, the full groups rolled up), with
# `walrs wal list` and `find | wc -l` (a listing of every WAL object) for scale.
#
#   sudo benches/status.sh          ~3-5 min (most of it building the repository)
#   WALRS_BIN=/path/walrs EXAMPLES_DIR=/path/dir   (prebuilt walrs and status_repo: no build)
#   knobs: SEGS (100000) RUNS (11) KEEP=1 (keep the temp dir)
#
# Each command runs RUNS times, alternating; the first round is separate (cold: the page cache
# was dropped before it when /proc/sys/vm/drop_caches is writable), the median of the others is
# reported. Syscalls of one warm run (strace -c -f, untimed): openat, getdents64, statx/newfstatat.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEGS=${SEGS:-100000}
RUNS=${RUNS:-11}
[[ $(id -u) -eq 0 ]] || die "run as root"
STRACE=1
apt_need strace strace || { STRACE=; log "strace unavailable: no syscall counts"; }

LOAD_START=$(load_now)
make_workdir walrs-status
trap 'rc=$?; if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi; exit $rc' EXIT

EXAMPLES_DIR=${EXAMPLES_DIR:-$BENCH_ROOT/target/release/examples}
if [[ -z ${WALRS_BIN:-} || ! -x $EXAMPLES_DIR/status_repo ]]; then
    log "cargo build --release --bin walrs --example status_repo"
    (cd "$BENCH_ROOT" && cargo build --release -q --bin walrs --example status_repo) ||
        die "cargo build failed"
    EXAMPLES_DIR=$BENCH_ROOT/target/release/examples
    [[ -n ${WALRS_BIN:-} ]] || WALRS_BIN=$BENCH_ROOT/target/release/walrs
fi
install -d -m 755 "$WORK/bin"
install_walrs "$WORK/bin/walrs"
W=$WORK/bin/walrs
install -m 755 "$EXAMPLES_DIR/status_repo" "$WORK/bin/"
log "walrs: $WALRS_VERSION"

REPO=$WORK/repo
t0=$(date +%s.%N)
"$WORK/bin/status_repo" "$REPO" "$SEGS" >&2
log "repository built in $(echo "$(date +%s.%N) - $t0" | bc) s; $(du -sh "$REPO" | cut -f1)"
export WALRS_REPO=$REPO

run_ms() { # run_ms CMD...: wall ms of one run, output discarded
    local a b
    a=$(date +%s%N)
    "$@" >/dev/null
    b=$(date +%s%N)
    echo $(((b - a) / 1000)) | awk '{printf "%.1f\n", $1/1000}'
}
declare -A COLD SAMPLES
NAMES=("status" "status --json" "metrics" "wal list" "find wal")
cmd_of() {
    case $1 in
        "status") echo "$W status" ;;
        "status --json") echo "$W status --json" ;;
        "metrics") echo "$W metrics" ;;
        "wal list") echo "$W wal list" ;;
        "find wal") echo "find $REPO/wal -type f" ;;
    esac
}
for n in "${NAMES[@]}"; do
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    # shellcheck disable=SC2046
    COLD[$n]=$(run_ms $(cmd_of "$n"))
done
for ((r = 0; r < RUNS; r++)); do
    for n in "${NAMES[@]}"; do
        # shellcheck disable=SC2046
        SAMPLES[$n]+="$(run_ms $(cmd_of "$n")) "
    done
done
SYS=()
if [[ -n $STRACE ]]; then
    for n in "status" "wal list"; do
        # shellcheck disable=SC2046
        c=$(strace -f -c -e trace=openat,getdents64,newfstatat,statx,statfs $(cmd_of "$n") 2>&1 >/dev/null |
            awk '$NF ~ /^(openat|getdents64|newfstatat|statx|statfs)$/ {printf "%s %s, ", $NF, $4}')
        SYS+=("$n: ${c%, }")
    done
fi
echo
echo "status benchmark: $SEGS segments of 16 MiB, file system; load at start $LOAD_START, at end $(load_now)"
echo "walrs: $WALRS_VERSION"
printf '%-16s %10s %12s %14s\n' command "cold ms" "warm median" "warm min..max"
for n in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    printf '%-16s %10s %12s %14s\n' "$n" "${COLD[$n]}" \
        "$(printf '%s\n' ${SAMPLES[$n]} | median)" "$(printf '%s\n' ${SAMPLES[$n]} | minmax)"
done
for l in "${SYS[@]}"; do echo "syscalls, $l"; done
"$W" status | head -12
