#!/usr/bin/env bash
# `walrs binlog tail` under write load, side by side with `mariadb-binlog --raw --stop-never` in the
# same run (issue 7): a MariaDB 10.11 server writes row-based binlog as fast as LOAD_CLIENTS clients
# can insert (target >= 10 MB/s) for LOAD_SECS seconds; both clients stream it at once.
#
#   sudo benches/binlog.sh              ~1-2 min; WALRS_BIN=/path/walrs skips the release build
#   knobs: LOAD_SECS (30) LOAD_CLIENTS (2) ROWS (20000 rows of ~330 bytes per INSERT)
#          FLUSH_INTERVAL (1s) MAX_BINLOG_SIZE (64M: rotations during the run) PORT (3399)
#          COMPRESSION (zstd:1) KEEP=1 (keep the temp dir)
#
# Measured: binlog bytes the server wrote and its write rate; for each client, every SAMPLE_SECS
# (0.5 s) its lag behind the server in bytes (server position from SHOW BINARY LOGS minus what the
# client has: walrs = what is durable in the repository, from the object keys: closed files and
# the end offset of the last part; mariadb-binlog = the bytes of its output files, not fsynced),
# shown also as seconds of server writing at the measured rate; time from the end of the load until
# each client holds everything; CPU seconds (user+sys) and peak RSS (VmHWM) of each client. walrs's
# durable lag includes the flush interval by design (events wait in memory up to FLUSH_INTERVAL).
# Finally every closed binlog fetched from walrs is compared with mariadb-binlog's copy (cmp).
set -euo pipefail
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

LOAD_SECS=${LOAD_SECS:-30}
LOAD_CLIENTS=${LOAD_CLIENTS:-2}
ROWS=${ROWS:-20000}
FLUSH_INTERVAL=${FLUSH_INTERVAL:-1s}
MAX_BINLOG_SIZE=${MAX_BINLOG_SIZE:-64M}
PORT=${PORT:-3399}
COMPRESSION=${COMPRESSION:-zstd:1}
SAMPLE_SECS=${SAMPLE_SECS:-0.5}

[[ $(id -u) -eq 0 ]] || die "run as root"
for b in mariadbd mariadb-install-db mariadb mariadb-binlog mariadb-admin; do
    command -v "$b" >/dev/null || die "$b missing: apt-get install -y mariadb-server mariadb-client"
done

WORK=$(mktemp -d /tmp/walrs-binlog.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    mariadb-admin --socket="$WORK/s.sock" -uroot shutdown 2>/dev/null || true
    wait 2>/dev/null || true
    [[ ${KEEP:-0} == 1 ]] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -n ${WALRS_BIN:-} ]]; then
    WALRS=$WALRS_BIN
else
    log "cargo build --release (set WALRS_BIN to skip)"
    (cd "$BENCH_ROOT" && cargo build --release -q) || die "build failed"
    WALRS=$BENCH_ROOT/target/release/walrs
fi

log "starting MariaDB in $WORK"
mariadb-install-db --no-defaults --user=root --datadir="$WORK/data" --auth-root-authentication-method=normal --skip-test-db >/dev/null
mariadbd --no-defaults --user=root --datadir="$WORK/data" --socket="$WORK/s.sock" --pid-file="$WORK/m.pid" \
    --port="$PORT" --bind-address=127.0.0.1 --log-error="$WORK/error.log" --log-bin="$WORK/data/mysql-bin" \
    --binlog-format=ROW --server-id=1 --innodb-buffer-pool-size=256M --innodb-log-file-size=256M \
    --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --max-binlog-size="$MAX_BINLOG_SIZE" \
    --skip-name-resolve --max-allowed-packet=64M >/dev/null 2>&1 &
for _ in $(seq 200); do mariadb-admin --socket="$WORK/s.sock" -uroot ping >/dev/null 2>&1 && break; sleep 0.1; done
M() { mariadb --socket="$WORK/s.sock" -uroot -N -B -e "$1"; }
M "CREATE USER repl@'%' IDENTIFIED BY 'replpw'; GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO repl@'%';
   CREATE DATABASE t; CREATE TABLE t.r (id BIGINT AUTO_INCREMENT PRIMARY KEY, c INT, v TEXT) ENGINE=InnoDB;"
FIRST=$(M "SHOW BINARY LOGS" | head -1 | cut -f1)

mkdir -p "$WORK/repo" "$WORK/raw"
log "starting walrs binlog tail ($WALRS, flush interval $FLUSH_INTERVAL, $COMPRESSION) and mariadb-binlog --raw"
WALRS_REPO=$WORK/repo WALRS_MYSQL_PASSWORD=replpw WALRS_COMPRESSION=$COMPRESSION WALRS_LOG=warn \
    "$WALRS" binlog tail --host 127.0.0.1 --port "$PORT" --user repl --server-id 901 \
    --flush-interval "$FLUSH_INTERVAL" >"$WORK/walrs.log" 2>&1 &
PIDS+=($!); WPID=$!
mariadb-binlog --read-from-remote-server --raw --stop-never --host=127.0.0.1 --port="$PORT" \
    --user=repl --password=replpw --stop-never-slave-server-id=902 --result-file="$WORK/raw/" "$FIRST" \
    >"$WORK/mb.log" 2>&1 &
PIDS+=($!); MPID=$!
sleep 1

# Global byte position: sizes of all files before F plus the offset in F (SHOW BINARY LOGS order).
server_pos() { M "SHOW BINARY LOGS" | awk '{s+=$2} END {print s+0}'; }
walrs_pos() {
    local logs; logs=$(M "SHOW BINARY LOGS")
    local last="" off=0 f
    for f in "$WORK"/repo/binlog/files/*; do [[ -e $f ]] && last=$(basename "$f"); done
    if [[ -n $last ]]; then off=$(awk -v n="$last" '$1==n {print $2}' <<<"$logs"); fi
    for d in "$WORK"/repo/binlog/parts/*/; do
        [[ -d $d ]] || continue
        local n; n=$(basename "$d")
        local e; e=$(ls "$d" 2>/dev/null | sort | tail -1 | cut -d- -f2)
        [[ -n $e ]] || continue
        if [[ -z $last || $n > $last ]]; then last=$n; off=$((10#$e)); fi
    done
    [[ -z $last ]] && { echo 0; return; }
    awk -v n="$last" -v o="$off" '$1<n {s+=$2} END {print s+o}' <<<"$logs"
}
raw_pos() { local s=0 f; for f in "$WORK"/raw/*; do [[ -e $f ]] && s=$((s + $(stat -c %s "$f"))); done; echo $s; }

log "writing for ${LOAD_SECS}s with $LOAD_CLIENTS clients"
START_BYTES=$(server_pos)
LOAD_END=$(( $(date +%s) + LOAD_SECS ))
for c in $(seq "$LOAD_CLIENTS"); do
    ( while (( $(date +%s) < LOAD_END )); do
        M "INSERT INTO t.r (c, v) SELECT $c, repeat(md5(seq), 10) FROM t.seq_1_to_$ROWS" >/dev/null
      done ) &
    LOADERS+=($!)
done
T0=$(date +%s.%N)
: > "$WORK/samples"
while (( $(date +%s) < LOAD_END )); do
    s=$(server_pos); w=$(walrs_pos); r=$(raw_pos)
    echo "$(date +%s.%N) $s $w $r" >> "$WORK/samples"
    sleep "$SAMPLE_SECS"
done
wait "${LOADERS[@]}"
T1=$(date +%s.%N)
END_BYTES=$(server_pos)
RATE=$(awk -v b=$((END_BYTES - START_BYTES)) -v t0="$T0" -v t1="$T1" 'BEGIN {printf "%.1f", b/(t1-t0)/1e6}')
log "server wrote $(( (END_BYTES - START_BYTES) / 1000000 )) MB at $RATE MB/s"

catch_up() { # $1: function giving the client's position; prints seconds until it reaches END_BYTES
    local t0; t0=$(date +%s.%N)
    for _ in $(seq 1200); do
        (( $($1) >= END_BYTES )) && { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b-a}'; return; }
        sleep 0.05
    done
    echo "never"
}
W_CATCH=$(catch_up walrs_pos); R_CATCH=$(catch_up raw_pos)

# CPU seconds (utime+stime) and peak RSS (VmHWM, MB) of a live process.
usage() {
    [[ -r /proc/$1/stat ]] || { echo "? ?"; return; }
    local tck; tck=$(getconf CLK_TCK)
    local cpu; cpu=$(awk -v t="$tck" '{sub(/^.*\) /, ""); printf "%.1f", ($12+$13)/t}' "/proc/$1/stat")
    echo "$cpu $(awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status")"
}
read -r W_CPU W_RSS < <(usage "$WPID")
read -r M_CPU M_RSS < <(usage "$MPID")
kill -TERM "$WPID" 2>/dev/null || true; wait "$WPID" 2>/dev/null || true
kill -TERM "$MPID" 2>/dev/null || true; wait "$MPID" 2>/dev/null || true

lagstats() { # column $1 of samples: lag in MB: median and max; seconds at RATE
    awk -v c="$1" -v r="$RATE" '{l=($2-$c)/1e6; if (l<0) l=0; print l}' "$WORK/samples" | sort -g | awk -v r="$RATE" '
        {a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2;
        printf "median %.1f MB (%.2f s), max %.1f MB (%.2f s)", m, m/r, a[NR], a[NR]/r}'
}

# Closed files must be identical.
BAD=0; N=0
for f in $(M "SHOW BINARY LOGS" | cut -f1 | head -n -1); do
    WALRS_REPO=$WORK/repo "$WALRS" binlog fetch "$f" "$WORK/check" 2>/dev/null || { BAD=$((BAD+1)); continue; }
    cmp -s "$WORK/check" "$WORK/raw/$f" || BAD=$((BAD+1)); N=$((N+1))
done

echo
echo "walrs binlog tail vs mariadb-binlog --raw --stop-never, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "server: $(( (END_BYTES - START_BYTES) / 1000000 )) MB of binlog in ${LOAD_SECS}s = $RATE MB/s, $(M 'SHOW BINARY LOGS' | wc -l) files (max_binlog_size $MAX_BINLOG_SIZE)"
printf '%-16s %-48s %-12s %-10s %-10s\n' client "lag during the load" "catch-up" "CPU s" "RSS MB"
printf '%-16s %-48s %-12s %-10s %-10s\n' "walrs (durable)" "$(lagstats 3)" "${W_CATCH}s" "$W_CPU" "$W_RSS"
printf '%-16s %-48s %-12s %-10s %-10s\n' "mariadb-binlog" "$(lagstats 4)" "${R_CATCH}s" "$M_CPU" "$M_RSS"
echo "closed files compared with mariadb-binlog's: $N, different: $BAD; repository $(du -sm "$WORK/repo" | cut -f1) MB ($COMPRESSION)"
