#!/usr/bin/env bash
# Third-party HLS players (ffmpeg, mpv, GStreamer playbin and playbin3) through a streamer's
# drop and return, commeowd vs nginx-rtmp. Results: bench/out/players.md.
# Usage: bench/players.sh [extra bench/players.py options]
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs nginx libnginx-mod-rtmp python3 mpv gstreamer1.0-tools \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav

cargo build --release -p commeowd
exec python3 bench/players.py "$@"
