#!/usr/bin/env bash
# Chat fan-out benchmark: 1,000 WebSocket sockets in one room, senders at stepped rates;
# commeowd vs a plain Node.js `ws` broadcast server, side by side.
# Usage: bench/chat-fanout.sh [sockets] [step seconds]   (default 1000, 10).
# Results: bench/out/chat-fanout.md (and .json).
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
missing=()
dpkg-query -W -f='${Status}' python3 2>/dev/null | grep -q "ok installed" || missing+=(python3)
command -v node >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
(cd bench/chat && npm ci --no-audit --no-fund --silent)

cargo build --release -p commeowd -p chatload
exec python3 bench/chat_fanout.py --sockets "${1:-1000}" --step-seconds "${2:-10}"
