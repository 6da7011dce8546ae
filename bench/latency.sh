#!/usr/bin/env bash
# Glass-to-glass latency benchmark: commeowd LL-HLS vs nginx-rtmp HLS in headless Chromium.
# Usage: bench/latency.sh [seconds]   (default 60). Results: bench/out/latency.md
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
missing=()
for p in nginx libnginx-mod-rtmp python3 chromium; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
command -v node >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
(cd bench/latency && npm ci --no-audit --no-fund --silent)

cargo build --release -p commeowd
exec python3 bench/latency.py --seconds "${1:-60}"
