#!/usr/bin/env bash
# Install, then run the whole test suite against real nats-server and valkey-server processes.
# Extra arguments go to pytest (e.g. -k faults, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
echo "[test] running the test suite"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
