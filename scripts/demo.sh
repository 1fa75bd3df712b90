#!/usr/bin/env bash
# The main job: install, then run the whole platform on this machine with the echo and
# embeddings functions deployed and a few invocations shown. Ctrl-C stops everything.
# Extra arguments go to `thaw up` (e.g. --exit-after-demo, --port 9090).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --demo
exec .venv/bin/thaw up --demo "$@"
