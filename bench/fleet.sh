#!/usr/bin/env bash
# Fleet relay benchmark: commeowd's outbox → mosquitto → commeow-central, with a
# one-process-per-event mosquitto_pub baseline. Results: bench/out/fleet.md.
# Usage: bench/fleet.sh [bench/fleet.py options, e.g. --outage 10000 100000]
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs mosquitto mosquitto-clients python3

cargo build --release -p commeowd -p commeow-central -p commeow-bench --bin mqttdirect
exec python3 bench/fleet.py "$@"
