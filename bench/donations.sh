#!/usr/bin/env bash
# Donations end to end: 1,000 keep-alive clients, each its own donor, posting donations to
# one channel through the real HTTP API at stepped rates; committed durably (fsync).
# Usage: bench/donations.sh [step seconds]   (default 10). Results: bench/out/donations.md
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs python3
cargo build --release -p commeowd
cargo build --release -p commeow-bench --bin donationload
exec python3 bench/donations.py --step-seconds "${1:-10}"
