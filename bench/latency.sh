#!/usr/bin/env bash
# Glass-to-glass latency benchmark: commeowd LL-HLS vs nginx-rtmp HLS in headless Chromium.
# Usage: bench/latency.sh [seconds]   (default 60). Results: bench/out/latency.md, and
# bench/out/latency-gop250.md for the same with OBS Simple mode's 250-frame (8.33 s) GOP.
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs --node nginx libnginx-mod-rtmp python3 chromium
(cd bench/latency && npm ci --no-audit --no-fund --silent)

cargo build --release -p commeowd
python3 bench/latency.py --seconds "${1:-60}"
exec python3 bench/latency.py --seconds "${1:-60}" --gop-frames 250
