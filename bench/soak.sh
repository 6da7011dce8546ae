#!/usr/bin/env bash
# Soak run against commeowd's release build: LL-HLS players, 200 chat sockets and steady
# donations for a while, sampled every minute; fails on RSS growth, a stall or an error.
# Usage: bench/soak.sh [--minutes 30] [bench/soak.py options]. Results: bench/out/soak.md
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs ffmpeg python3
cargo build --release -p commeowd
exec python3 bench/soak.py "$@"
