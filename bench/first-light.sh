#!/usr/bin/env bash
# First-light benchmark: commeowd vs nginx-rtmp, side by side, on one 1080p30 push.
# Usage: bench/first-light.sh [seconds]   (default 60). Results: bench/out/first-light.md
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs nginx libnginx-mod-rtmp python3

cargo build --release -p commeowd
exec python3 bench/first_light.py --seconds "${1:-60}"
