#!/usr/bin/env bash
# What WebRTC viewers cost the box: CPU and RSS for 0, 1, 10 and 50 WHEP viewers on one
# channel. Results: bench/out/webrtc-cost.md. Usage: bench/webrtc.sh [--seconds 20]
# (Glass-to-glass latency of WebRTC against LL-HLS is bench/latency.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs python3 ffmpeg

cargo build --release -p commeowd -p commeow-bench --bin commeowd --bin whepload
exec python3 bench/webrtc.py "$@"
