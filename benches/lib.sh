# Shared helpers of benches/archive_drain.sh and benches/hotpath.sh. Sourced, not run.
# Expects: set -euo pipefail in the caller, running as root (postgres runs as the `postgres` user).

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-postgres}
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root (postgres is started as user $PG_USER with runuser)"
    id "$PG_USER" >/dev/null 2>&1 || die "user $PG_USER does not exist"
    [[ -x $PGBIN/initdb ]] || die "no PostgreSQL binaries in $PGBIN"
}

# Installs Debian packages that are missing (idempotent): apt_need CMD PACKAGE ...
apt_need() {
    local cmd=$1; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; } \
        || return 1
}

# Copies a release walrs to $1 (executable by postgres). WALRS_BIN overrides the build.
install_walrs() {
    local dest=$1
    if [[ -n ${WALRS_BIN:-} ]]; then
        install -m 755 "$WALRS_BIN" "$dest"
        WALRS_VERSION="$("$dest" --version) (WALRS_BIN=$WALRS_BIN)"
        return
    else
        log "cargo build --release (set WALRS_BIN to skip)"
        (cd "$BENCH_ROOT" && cargo build --release -q) || die "cargo build --release failed"
        install -m 755 "$BENCH_ROOT/target/release/walrs" "$dest"
    fi
    WALRS_VERSION="$("$dest" --version) ($(cd "$BENCH_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$BENCH_ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty'))"
}

# For the opt-in walrs-base method: copies WALRS_BASE_BIN (an earlier build, for a before and
# after comparison in one run) to $1 when METHODS names walrs-base. Returns 0 if it did.
install_walrs_base() {
    local dest=$1
    [[ " $METHODS " == *" walrs-base "* ]] || return 1
    [[ -n ${WALRS_BASE_BIN:-} ]] || die "walrs-base needs WALRS_BASE_BIN (the baseline binary)"
    install -m 755 "$WALRS_BASE_BIN" "$dest"
    log "walrs-base: $("$dest" --version) (WALRS_BASE_BIN=$WALRS_BASE_BIN)"
}

# A directory under /tmp that the postgres user can traverse; removed by cleanup_all.
make_workdir() {
    local prefix=$1
    WORK=$(mktemp -d "/tmp/$prefix.XXXXXX")
    chmod 755 "$WORK"
    chown "$PG_USER:" "$WORK"
}

as_pg() { runuser -u "$PG_USER" -- "$@"; }

# pg_init DATADIR SOCKDIR PORT [extra postgresql.conf lines...]
pg_init() {
    local data=$1 sock=$2 port=$3; shift 3
    install -d -m 700 -o "$PG_USER" -g "$(id -gn "$PG_USER")" "$data"
    install -d -m 755 -o "$PG_USER" -g "$(id -gn "$PG_USER")" "$sock"
    as_pg env -u PGDATA -u PGHOST -u PGPORT -u PGUSER LC_ALL=C.UTF-8 \
        "$PGBIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$sock'"
        echo "wal_level = replica"
        echo "max_wal_senders = 10"
        local l; for l in "$@"; do echo "$l"; done
    } >>"$data/postgresql.conf"
}

pg_start() { as_pg env LC_ALL=C.UTF-8 "$PGBIN/pg_ctl" -D "$1" -l "$1/../pg.log" -w -t 60 start >/dev/null; }
pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$1" -m "${2:-fast}" -w -t 60 stop >/dev/null 2>&1 || true; }

# psql_q SQL: one query, unaligned output; uses PG_SOCK and PG_PORT.
psql_q() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -c "$1"; }

# Median of the numbers on stdin (one per line).
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# min / max of numbers on stdin
minmax() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s..%s", lo, hi}'; }

# Sleep without forking (polling loops).
exec {BENCH_SLEEP_FD}<> <(:)
nap() { read -r -t "$1" -u "$BENCH_SLEEP_FD" || true; }

load_now() { cut -d' ' -f1-3 /proc/loadavg; }

machine_line() {
    printf '%s cores (%s), %s MiB RAM, kernel %s, /tmp on %s\n' "$(nproc)" \
        "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" \
        "$(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo)" "$(uname -r)" \
        "$(findmnt -n -o SOURCE,FSTYPE -T /tmp | tr -s ' ')"
}

# Starts the tests' S3 server (examples/s3_server: s3s-fs, SigV4 checked) on 127.0.0.1:$S3_PORT
# with its root in $WORK/s3root; builds it unless S3_SERVER_BIN names a binary. Sets S3_PID and
# S3_ENV (the credentials and endpoint a walrs command needs). The caller's cleanup kills S3_PID.
start_s3_server() {
    S3_SERVER_BIN=${S3_SERVER_BIN:-}
    if [[ -z $S3_SERVER_BIN ]]; then
        log "cargo build --release --example s3_server (set S3_SERVER_BIN to skip)"
        (cd "$BENCH_ROOT" && cargo build --release -q --example s3_server) || die "building examples/s3_server failed"
        S3_SERVER_BIN=$BENCH_ROOT/target/release/examples/s3_server
    fi
    install -m 755 "$S3_SERVER_BIN" "$WORK/bin/s3_server"
    mkdir -p "$WORK/s3root"
    "$WORK/bin/s3_server" "$WORK/s3root" "$S3_PORT" >"$WORK/s3_server.out" 2>&1 &
    S3_PID=$!
    for _ in $(seq 50); do grep -q http "$WORK/s3_server.out" 2>/dev/null && break; nap 0.1; done
    grep -q http "$WORK/s3_server.out" || die "s3_server did not start: $(cat "$WORK/s3_server.out")"
    S3_ENV="AWS_ACCESS_KEY_ID=walrs-test-access-key AWS_SECRET_ACCESS_KEY=walrs-test-secret-key-0123456789 WALRS_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    log "S3 server: $(head -1 "$WORK/s3_server.out")"
}
