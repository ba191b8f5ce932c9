#!/usr/bin/env bash
# Logical dump and load, side by side in one run (issue 19), on a database of a few large and many
# small tables: pgbench at SCALE (~15 MB per unit), a table of md5 text (TEXT_MB), and SMALL small
# tables. Per round, alternating: `walrs dump --jobs 2` into a file-system repository,
# `pg_dump -Fd -j2` (default compression), `pg_dump -Fd -j2 -Z0`, `pg_dump -Fc | zstd -1`; then
# `walrs load --jobs 2` of walrs's dump and `pg_restore -j2` of pg_dump's directory, each into a new
# database. Per contender: wall time (median and range over ROUNDS), the client's CPU (user+sys of
# the process tree, GNU time), the server's CPU (the postmaster's tree, from /proc), peak RSS (the
# largest process of the client tree) and the stored size. With PROFILE=1 one more walrs dump and
# load run with pg_stat_activity sampled every 100 ms (what walrs's sessions wait on).
#
#   sudo benches/dump.sh                                 # SCALE=100 TEXT_MB=500 SMALL=200 ROUNDS=3
#   WALRS_BIN=/path/to/walrs WALRS_BASE_BIN=/path/to/older ROUNDS=3 benches/dump.sh
#   DB_CACHE=/var/tmp/walrs-dump-db benches/dump.sh      # build the database once, reuse it
#
# Knobs: SCALE (100), TEXT_MB (500), SMALL (200), ROUNDS (3), PG_PORT (5495), SPLIT (walrs dump
# --split-size, default walrs's), WALRS_DUMP_ARGS / WALRS_LOAD_ARGS (extra flags),
# WALRS_BASE_BIN (an earlier walrs, run as walrs-base-dump / walrs-base-load: before and after in
# one run), CONTENDERS (default: all), PROFILE (0), DB_CACHE (a directory keeping the built data
# directory between runs), KEEP=1 keeps the temp dir.
# LOAD_ONLY=1: one walrs dump and one pg_dump -Fd -j2, then ROUNDS rounds of loads only, in an order
# that rotates per round: walrs load --jobs 2, pg_restore -j2, and pg_restore -j2 with the session
# settings walrs load gives its sessions (PGOPTIONS="$LOAD_PGOPTIONS", contender
# pg_restore-j2-opts: what is the setting and what is walrs), and walrs load with the server's
# settings (walrs-load-server: --synchronous-commit on --maintenance-work-mem <the server's>, as
# walrs loaded before it set them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCALE=${SCALE:-100}
TEXT_MB=${TEXT_MB:-500}
SMALL=${SMALL:-200}
ROUNDS=${ROUNDS:-3}
PG_PORT=${PG_PORT:-5495}
SPLIT=${SPLIT:-}
PROFILE=${PROFILE:-0}
DB_CACHE=${DB_CACHE:-}
WALRS_DUMP_ARGS=${WALRS_DUMP_ARGS:-}
WALRS_LOAD_ARGS=${WALRS_LOAD_ARGS:-}
LOAD_ONLY=${LOAD_ONLY:-0}
LOAD_PGOPTIONS=${LOAD_PGOPTIONS:--c maintenance_work_mem=512MB -c synchronous_commit=off}
need_root
[[ -x /usr/bin/time ]] || apt_need /usr/bin/time time || die "GNU time is needed"
command -v zstd >/dev/null || apt_need zstd zstd || die "zstd is needed"
make_workdir walrs-dump-bench
cleanup_all() {
    pg_stop "$DATA" immediate
    [[ ${KEEP:-0} == 1 ]] && { log "kept $WORK"; return; }
    rm -rf "$WORK"
}
DATA=$WORK/data
trap cleanup_all EXIT
install_walrs "$WORK/walrs"
BASE=0
if [[ -n ${WALRS_BASE_BIN:-} ]]; then
    install -m 755 "$WALRS_BASE_BIN" "$WORK/walrs-base"
    BASE=1
    log "walrs-base: $("$WORK/walrs-base" --version) (WALRS_BASE_BIN=$WALRS_BASE_BIN)"
fi
PG_SOCK=$WORK/sock
CONF=("max_wal_size = 8GB" "checkpoint_timeout = 1h" "shared_buffers = 512MB" "maintenance_work_mem = 256MB" "max_connections = 50")
built=0
if [[ -n $DB_CACHE && -f $DB_CACHE/data/PG_VERSION ]]; then
    log "reusing the database in $DB_CACHE"
    install -d -m 700 -o "$PG_USER" "$DATA"
    cp -a "$DB_CACHE/data/." "$DATA/"
    install -d -m 755 -o "$PG_USER" "$PG_SOCK"
    sed -i "s|^unix_socket_directories = .*|unix_socket_directories = '$PG_SOCK'|; s|^port = .*|port = $PG_PORT|" "$DATA/postgresql.conf"
else
    pg_init "$DATA" "$PG_SOCK" "$PG_PORT" "${CONF[@]}"
    built=1
fi
pg_start "$DATA"
CONN="host=$PG_SOCK port=$PG_PORT user=postgres"
if [[ $built == 1 ]]; then
    log "building the database: pgbench -i -s $SCALE, $TEXT_MB MB of md5 text, $SMALL small tables"
    psql_q "CREATE DATABASE src" >/dev/null
    "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$PG_SOCK" -p "$PG_PORT" -U postgres src >/dev/null 2>&1
    # ~140 bytes a row on disk: three md5 strings (hex text, as in logs, tokens, hashes) and a time.
    ROWS=$((TEXT_MB * 1024 * 1024 / 160))
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$CONN dbname=src" -c \
        "CREATE TABLE notes (id bigint PRIMARY KEY, at timestamptz NOT NULL, title text, body text);
         INSERT INTO notes SELECT g, timestamptz '2026-01-01' + g * interval '1 second',
           'note ' || md5(g::text), md5((g * 7)::text) || ' ' || md5((g * 13)::text) || ' ' || md5((g * 17)::text)
         FROM generate_series(1, $ROWS) g;
         CREATE INDEX notes_at ON notes (at);" >/dev/null
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$CONN dbname=src" >/dev/null <<SQL
DO \$\$BEGIN FOR i IN 1..$SMALL LOOP
  EXECUTE format('CREATE TABLE small_%s (id int PRIMARY KEY, name text NOT NULL, qty int, price numeric(10,2), at timestamptz DEFAULT now())', i);
  EXECUTE format('INSERT INTO small_%s (id, name, qty, price) SELECT g, %L || g, g %% 97, (g %% 1000) / 7.0 FROM generate_series(1, 300 + (%s * 37) %% 2000) g', i, 'item ', i);
END LOOP; END\$\$;
SQL
    "$PGBIN/psql" -X -q -d "$CONN dbname=src" -c "VACUUM ANALYZE" >/dev/null
    psql_q "CHECKPOINT" >/dev/null
    if [[ -n $DB_CACHE ]]; then
        pg_stop "$DATA"
        rm -rf "$DB_CACHE"; mkdir -p "$DB_CACHE"; cp -a "$DATA" "$DB_CACHE/data"
        pg_start "$DATA"
        log "database kept in $DB_CACHE"
    fi
fi
DB_MB=$("$PGBIN/psql" -X -At -d "$CONN dbname=src" -c "SELECT pg_database_size('src') / 1048576")
SIZES=$("$PGBIN/psql" -X -At -d "$CONN dbname=src" -c \
    "SELECT string_agg(relname || ' ' || pg_size_pretty(pg_table_size(oid)), ', ' ORDER BY pg_table_size(oid) DESC) FROM (SELECT oid, relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY pg_table_size(oid) DESC LIMIT 4) x")
NTABLES=$("$PGBIN/psql" -X -At -d "$CONN dbname=src" -c "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")
REPO=$WORK/repo
REPO_BASE=$WORK/repo-base
install -d -o "$PG_USER" "$REPO" "$REPO_BASE"
PM_PID=$(head -1 "$DATA/postmaster.pid")

# CPU seconds of the server so far: the postmaster and its reaped children, plus the live ones.
server_cpu() {
    local tck; tck=$(getconf CLK_TCK)
    {
        awk '{print $14 + $15 + $16 + $17}' "/proc/$PM_PID/stat"
        for p in $(pgrep -P "$PM_PID"); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true; done
    } | awk -v t="$tck" '{s += $1} END {printf "%.2f", s / t}'
}

# run NAME CMD...: one timed run as postgres; appends "NAME seconds rss_kb client_cpu server_cpu".
run() {
    local name=$1; shift
    sync; nap 2
    local s0; s0=$(server_cpu)
    local t0=$EPOCHREALTIME
    as_pg /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "$@" >"$WORK/out" 2>"$WORK/err" || { cat "$WORK/err" >&2; die "$name failed"; }
    local t1=$EPOCHREALTIME
    nap 0.3
    local s1; s1=$(server_cpu)
    read -r rss u s < <(tail -1 "$WORK/rss")
    echo "$name $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}') $rss $(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}') $(awk -v a="$s0" -v b="$s1" 'BEGIN{printf "%.2f", b-a}')" >>"$WORK/results"
    log "$(tail -1 "$WORK/results")"
}

fresh_db() { psql_q "DROP DATABASE IF EXISTS $1" >/dev/null; psql_q "CREATE DATABASE $1" >/dev/null; }
split_arg=()
[[ -n $SPLIT ]] && split_arg=(--split-size "$SPLIT")
# shellcheck disable=SC2206
dump_extra=($WALRS_DUMP_ARGS)
# shellcheck disable=SC2206
load_extra=($WALRS_LOAD_ARGS)

walrs_dump() { # BIN REPO NAME
    run "$3" env WALRS_REPO="$2" WALRS_PG_DUMP_BIN="$PGBIN/pg_dump" "$1" dump -d "$CONN dbname=src" --jobs 2 "${split_arg[@]}" "${dump_extra[@]}"
    cat "$WORK/out"
}
walrs_load() { # BIN REPO ID NAME
    fresh_db l1
    run "$4" env WALRS_REPO="$2" WALRS_PG_RESTORE_BIN="$PGBIN/pg_restore" "$1" load "$3" -d "$CONN dbname=l1" --jobs 2 "${load_extra[@]}"
}

: >"$WORK/results"
START=$(date -u +%FT%TZ)
LOAD_START=$(load_now)
rows_of() { "$PGBIN/psql" -X -At -d "$CONN dbname=$1" -c "SELECT (SELECT count(*) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM notes)"; }
if [[ $LOAD_ONLY == 1 ]]; then
    log "load only: one walrs dump and one pg_dump -Fd -j2 (load average $(load_now))"
    ID=$(walrs_dump "$WORK/walrs" "$REPO" walrs-dump)
    WALRS_STORED=$(du -sb "$REPO/dumps/$ID" | cut -f1)
    run pg_dump-Fd-j2 "$PGBIN/pg_dump" -Fd -j2 -f "$WORK/pgd" -d "$CONN dbname=src"
    SERVER_MWM=$("$PGBIN/psql" -X -At -d "$CONN dbname=src" -c "SHOW maintenance_work_mem")
    order=(walrs pgr pgr-opts walrs-server)
    for r in $(seq "$ROUNDS"); do
        log "round $r: loads (load average $(load_now))"
        for k in "${order[@]}"; do
            case $k in
                walrs) walrs_load "$WORK/walrs" "$REPO" "$ID" walrs-load; ROWS1=$(rows_of l1) ;;
                walrs-server)
                    fresh_db l4
                    run walrs-load-server env WALRS_REPO="$REPO" WALRS_PG_RESTORE_BIN="$PGBIN/pg_restore" "$WORK/walrs" load "$ID" -d "$CONN dbname=l4" --jobs 2 \
                        --synchronous-commit on --maintenance-work-mem "$SERVER_MWM" "${load_extra[@]}"
                    ROWS4=$(rows_of l4) ;;
                pgr) fresh_db l2; run pg_restore-j2 "$PGBIN/pg_restore" -j2 -d "$CONN dbname=l2" "$WORK/pgd"; ROWS2=$(rows_of l2) ;;
                pgr-opts) fresh_db l3; run pg_restore-j2-opts env PGOPTIONS="$LOAD_PGOPTIONS" "$PGBIN/pg_restore" -j2 -d "$CONN dbname=l3" "$WORK/pgd"; ROWS3=$(rows_of l3) ;;
            esac
        done
        order=("${order[@]:1}" "${order[0]}")
    done
    ROUNDS_DONE=1
fi
for r in $(seq "$ROUNDS"); do
    [[ ${ROUNDS_DONE:-0} == 1 ]] && break
    log "round $r: dumps (load average $(load_now))"
    rm -rf "$REPO/dumps" "$REPO_BASE/dumps"
    ID=$(walrs_dump "$WORK/walrs" "$REPO" walrs-dump)
    WALRS_STORED=$(du -sb "$REPO/dumps/$ID" | cut -f1)
    if [[ $BASE == 1 ]]; then
        BID=$(walrs_dump "$WORK/walrs-base" "$REPO_BASE" walrs-base-dump)
        BASE_STORED=$(du -sb "$REPO_BASE/dumps/$BID" | cut -f1)
    fi
    rm -rf "$WORK/pgd" "$WORK/pgd0" "$WORK/pgc.zst"
    run pg_dump-Fd-j2 "$PGBIN/pg_dump" -Fd -j2 -f "$WORK/pgd" -d "$CONN dbname=src"
    run pg_dump-Fd-j2-Z0 "$PGBIN/pg_dump" -Fd -j2 -Z0 -f "$WORK/pgd0" -d "$CONN dbname=src"
    run pg_dump-Fc-zstd1 sh -c "'$PGBIN/pg_dump' -Fc -Z0 -d '$CONN dbname=src' | zstd -1 -q -o '$WORK/pgc.zst'"
    log "round $r: loads"
    walrs_load "$WORK/walrs" "$REPO" "$ID" walrs-load
    ROWS1=$("$PGBIN/psql" -X -At -d "$CONN dbname=l1" -c "SELECT (SELECT count(*) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM notes)")
    [[ $BASE == 1 ]] && walrs_load "$WORK/walrs-base" "$REPO_BASE" "$BID" walrs-base-load
    fresh_db l2
    run pg_restore-j2 "$PGBIN/pg_restore" -j2 -d "$CONN dbname=l2" "$WORK/pgd"
    ROWS2=$("$PGBIN/psql" -X -At -d "$CONN dbname=l2" -c "SELECT (SELECT count(*) FROM pgbench_accounts) || ' ' || (SELECT count(*) FROM notes)")
done
LOAD_END=$(load_now)
PGD_STORED=$(du -sb "$WORK/pgd" | cut -f1)
PGD0_STORED=$(du -sb "$WORK/pgd0" 2>/dev/null | cut -f1 || echo 0)
PGC_STORED=$(du -sb "$WORK/pgc.zst" 2>/dev/null | cut -f1 || echo 0)

if [[ $PROFILE == 1 ]]; then
    log "profile: pg_stat_activity sampled every 100 ms during one walrs dump and one load"
    sample() {
        while :; do
            "$PGBIN/psql" -X -At -F ' ' -d "$CONN dbname=postgres" -c \
                "SELECT coalesce(wait_event_type, 'CPU'), coalesce(wait_event, state) FROM pg_stat_activity WHERE application_name LIKE 'walrs%' OR (backend_type = 'client backend' AND application_name = 'pg_restore')" 2>/dev/null
            nap 0.1
        done >"$WORK/samples.$1"
    }
    rm -rf "$REPO/dumps"
    sample dump & SP=$!
    ID=$(walrs_dump "$WORK/walrs" "$REPO" walrs-dump-profiled)
    kill "$SP"; wait "$SP" 2>/dev/null || true
    sample load & SP=$!
    walrs_load "$WORK/walrs" "$REPO" "$ID" walrs-load-profiled
    kill "$SP"; wait "$SP" 2>/dev/null || true
fi

echo "# dump/load bench: database src $DB_MB MiB ($NTABLES tables; largest: $SIZES), $ROUNDS round(s), $START .. $(date -u +%FT%TZ)"
echo "# $(machine_line); load average at the start: $LOAD_START, at the end: $LOAD_END"
echo "# $WALRS_VERSION; $("$PGBIN/pg_dump" --version); walrs dump args: --jobs 2 ${split_arg[*]} ${dump_extra[*]}; load args: --jobs 2 ${load_extra[*]}"
printf '%-18s %9s %16s %13s %13s %8s\n' contender "median s" "(min..max)" "client CPU s" "server CPU s" "RSS MB"
for n in walrs-dump walrs-base-dump pg_dump-Fd-j2 pg_dump-Fd-j2-Z0 pg_dump-Fc-zstd1 walrs-load walrs-load-server walrs-base-load pg_restore-j2 pg_restore-j2-opts walrs-dump-profiled walrs-load-profiled; do
    grep -q "^$n " "$WORK/results" || continue
    med=$(awk -v n="$n" '$1==n{print $2}' "$WORK/results" | median)
    mm=$(awk -v n="$n" '$1==n{print $2}' "$WORK/results" | minmax)
    rss=$(awk -v n="$n" '$1==n{print $3}' "$WORK/results" | sort -n | tail -1)
    ccpu=$(awk -v n="$n" '$1==n{print $4}' "$WORK/results" | median)
    scpu=$(awk -v n="$n" '$1==n{print $5}' "$WORK/results" | median)
    printf '%-18s %9.2f %16s %13.2f %13.2f %8d\n' "$n" "$med" "($mm)" "$ccpu" "$scpu" "$((rss / 1024))"
done
echo "ratios (median of per-round ratios):"
ratio() { # A B
    paste <(awk -v n="$1" '$1==n{print $2}' "$WORK/results") <(awk -v n="$2" '$1==n{print $2}' "$WORK/results") \
        | awk '{printf "%.3f\n", $1 / $2}' | median
}
for pair in "walrs-dump pg_dump-Fd-j2" "walrs-dump pg_dump-Fd-j2-Z0" "walrs-dump pg_dump-Fc-zstd1" "walrs-load pg_restore-j2" "walrs-load pg_restore-j2-opts" "pg_restore-j2-opts pg_restore-j2" "walrs-load walrs-load-server" "walrs-load-server pg_restore-j2" "walrs-dump walrs-base-dump" "walrs-load walrs-base-load"; do
    read -r a b <<<"$pair"
    grep -q "^$a " "$WORK/results" && grep -q "^$b " "$WORK/results" && printf '  %-16s / %-18s %s\n' "$a" "$b" "$(ratio "$a" "$b")"
done
echo "stored: walrs $((WALRS_STORED / 1048576)) MiB$([[ $BASE == 1 ]] && echo ", walrs-base $((BASE_STORED / 1048576)) MiB"), pg_dump -Fd $((PGD_STORED / 1048576)) MiB$([[ $LOAD_ONLY == 1 ]] || echo ", pg_dump -Fd -Z0 $((PGD0_STORED / 1048576)) MiB, pg_dump -Fc | zstd -1 $((PGC_STORED / 1048576)) MiB")"
echo "loaded rows (pgbench_accounts, notes): walrs $ROWS1, pg_restore $ROWS2${ROWS3:+, pg_restore with PGOPTIONS=\"$LOAD_PGOPTIONS\" $ROWS3}${ROWS4:+, walrs with the server settings $ROWS4}"
if [[ $PROFILE == 1 ]]; then
    for k in dump load; do
        echo "pg_stat_activity samples during walrs $k ($(wc -l <"$WORK/samples.$k") session-samples):"
        sort "$WORK/samples.$k" | uniq -c | sort -rn | head -8 | sed 's/^/  /'
    done
fi
