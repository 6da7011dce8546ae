#!/usr/bin/env bash
# Chat fan-out benchmark: 1,000 WebSocket sockets in one room, senders at stepped rates;
# commeowd vs a plain Node.js `ws` broadcast server, side by side.
# Usage: bench/chat-fanout.sh [sockets] [step seconds]   (default 1000, 10).
# Results: bench/out/chat-fanout.md (and .json).
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs --node python3
(cd bench/chat && npm ci --no-audit --no-fund --silent)

cargo build --release -p commeowd
cargo build --release -p commeow-bench --bin chatload
exec python3 bench/chat_fanout.py --sockets "${1:-1000}" --step-seconds "${2:-10}"
