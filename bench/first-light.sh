#!/usr/bin/env bash
# First-light benchmark: commeowd vs nginx-rtmp, side by side, on one 1080p30 push.
# Usage: bench/first-light.sh [seconds]   (default 60). Results: bench/out/first-light.md
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
missing=()
for p in nginx libnginx-mod-rtmp python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo build --release -p commeowd
exec python3 bench/first_light.py --seconds "${1:-60}"
