#!/usr/bin/env bash
# The transcoding ladder, commeowd vs the ffmpeg CLI running the same ladder on the same
# libav. Results: bench/out/ladder.md. Usage: bench/ladder.sh [--seconds 40]
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs python3 ffmpeg

cargo build --release -p commeowd
exec python3 bench/ladder.py "$@"
