#!/usr/bin/env bash
# The donation path at the store: commeowd's ledger writer vs the seed's approach
# (PostgreSQL, SELECT ... FOR UPDATE on the streamer's row, one transaction per donation,
# a pool of connections via pgbench), side by side, both durable (fsync on).
# Usage: bench/ledger.sh [seconds]   (default 10). Results: bench/out/ledger.md (and .json).
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs postgresql python3
cargo build --release -p commeow-bench --bin ledgerload
exec python3 bench/ledger.py --seconds "${1:-10}"
