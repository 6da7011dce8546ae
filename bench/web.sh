#!/usr/bin/env bash
# The web app's weight and speed as a phone on the venue Wi-Fi gets it: bytes transferred
# (compressed) for the first page and the watch page, first contentful paint, the channel
# list on screen, and the watch page's first video frame, over cold loads in headless
# Chromium against the release daemon on loopback with a live ffmpeg push.
# Usage: bench/web.sh [loads]   (default 20). Results: bench/out/web.md (and .json)
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
cargo build --release -p commeowd
mkdir -p bench/out
COMMEOWD_BIN="$PWD/target/release/commeowd" node bench/web.mjs "${1:-20}"
