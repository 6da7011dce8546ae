#!/usr/bin/env bash
# The security review's abuse reproductions (issue 21) against commeowd's release build:
# bursts of logins and sign-ups, a guessing burst, 2 MB usernames; peak memory and answers.
# Usage: bench/abuse.sh [BASELINE_COMMEOWD]   (e.g. a release build of an older commit, to
# compare side by side). Results: bench/out/abuse.md
set -euo pipefail
cd "$(dirname "$0")/.."

.ci/setup-debian
bench/install-needs python3
cargo build --release -p commeowd
if [ $# -gt 0 ]; then
  exec python3 bench/abuse.py --baseline "$1"
fi
exec python3 bench/abuse.py
