#!/usr/bin/env bash
# Installs the test prerequisites (idempotently) and runs every test: formatting, clippy, unit
# and property tests, and the integration tests that start real PostgreSQL servers.
# Run as root (the tests mount small file systems and run PostgreSQL as the 'postgres' user).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-prereqs.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
rm -f target/tmp/fault-injection.txt
INSTA_UPDATE=no cargo test --all-targets --locked
echo "== injected faults"
cat target/tmp/fault-injection.txt 2>/dev/null || true
