#!/usr/bin/env bash
# Glass-to-glass latency benchmark: commeowd LL-HLS vs nginx-rtmp HLS in headless Chromium.
# Usage: bench/latency.sh [seconds]   (default 60). Results: bench/out/latency.md
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs --node nginx libnginx-mod-rtmp python3 chromium
(cd bench/latency && npm ci --no-audit --no-fund --silent)

cargo build --release -p commeowd
exec python3 bench/latency.py --seconds "${1:-60}"
