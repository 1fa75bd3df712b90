"""A CPU reference worker shaped like a torch model server, built to snapshot small.

Cold start does what a real framework worker does, with the standard library only:

1. "import the framework": compile and keep a few thousand generated functions (seconds of CPU,
   tens of MB of Python heap, like importing torch + transformers);
2. "load the model": map a ~1 GiB weights file and check it end to end (seconds, like
   ``torch.load`` reading every tensor).

Why the weights live in a node-local file mapped read-only, and not in anonymous memory: CRIU
writes every anonymous page into the image and on restore must fill fresh anonymous memory again
(about 1 s per GiB on this VM), which caps the gain of a restore at ~3.5x. Clean pages of a
file mapping are *not* in the image at all: CRIU records "map /cache/weights-<sha>.bin at this
address" and the restored process faults the pages back in from the page cache. So the image
carries only the interpreter heap (tens of MB) and restore is dominated by process creation.
The contract that makes this safe: the weights file is immutable once published (written to a
temporary name, then renamed), named by its content, and CRIU refuses to restore if its size
changed — which the snapshotter turns into a cold-start fallback.

HTTP API (stdlib http.server, one thread per connection):
- ``GET /health``: 200 once loaded.
- ``POST /infer`` with ``{"input": "text"}``: a deterministic "embedding" computed from the
  weights, plus warm state (``served`` counter, ``loaded_at``, ``pid``) so a test can tell a
  restored worker from a cold one.

Environment: PORT (required), MODEL_DIR (weights cache, default ~/.cache/thaw/models),
MODEL_MIB (default 1024), IMPORT_FUNCS (import-time work, default 9000 functions), BIND
(default 127.0.0.1; containers use 0.0.0.0); each may also be given as THAW_<NAME>.
Logs go to stdout; whoever starts the worker must open the log file O_APPEND (CRIU refuses to
restore a process whose non-append log file changed size since the dump).
"""

import hashlib
import json
import mmap
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PAGE = 4096
CHUNK = 1 << 20
SEED = 20240601


def log(msg: str) -> None:
    print(f"[torchlike pid={os.getpid()}] {msg}", flush=True)


def import_framework(n_funcs: int) -> list:
    """Compile n_funcs generated functions and keep them: CPU-bound import-time work."""
    funcs = []
    for i in range(n_funcs):
        body = "\n".join(f"    x = (x * {j + 3} + {i}) % 1000003" for j in range(40))
        src = f"def layer_{i}(x):\n{body}\n    return x\n"
        ns: dict = {}
        exec(compile(src, f"<layer_{i}>", "exec"), ns)
        funcs.append(ns[f"layer_{i}"])
    return funcs


def ensure_weights(model_dir: Path, size_mib: int) -> Path:
    """Create the weights file once (deterministic bytes) and return its path. Safe to race:
    each creator writes its own temporary file and renames it into place."""
    path = model_dir / f"weights-{size_mib}mib-{SEED}.bin"
    if path.exists() and path.stat().st_size == size_mib * CHUNK:
        return path
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rng = random.Random(SEED)
    block = rng.randbytes(CHUNK)
    with open(tmp, "wb") as f:
        for i in range(size_mib):
            # Vary each MiB cheaply so no two chunks are equal (a real model has no repeats).
            f.write(i.to_bytes(8, "little") + block[8:])
    os.replace(tmp, path)
    return path


def load_weights(path: Path) -> tuple[mmap.mmap, str]:
    """Map the weights read-only and hash them end to end, as a framework's load would read
    every tensor. Returns the mapping and its sha256."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    h = hashlib.sha256()
    view = memoryview(mm)
    for off in range(0, len(mm), 16 * CHUNK):
        h.update(view[off : off + 16 * CHUNK])
    view.release()
    return mm, h.hexdigest()


class Model:
    """Warm state: the compiled layers, the mapped weights, and a request counter."""

    def __init__(self, layers: list, weights: mmap.mmap, weights_sha: str) -> None:
        self.layers = layers
        self.weights = weights
        self.weights_sha = weights_sha
        self.loaded_at = time.time()
        self.served = 0
        self.lock = threading.Lock()

    def infer(self, text: str) -> dict:
        """Touch every weight page (as a forward pass would), then derive 8 numbers."""
        with memoryview(self.weights) as view:
            strided = view[::PAGE].tobytes()
        touched = hashlib.blake2b(strided, digest_size=8).hexdigest()
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        emb = []
        for k in range(8):
            off = (seed + k * 7919 * PAGE) % (len(self.weights) - 8)
            x = int.from_bytes(self.weights[off : off + 8], "little") % 1000003
            emb.append(self.layers[(seed + k) % len(self.layers)](x) / 1000003)
        with self.lock:
            self.served += 1
            served = self.served
        return {
            "embedding": emb,
            "weights_sha256": self.weights_sha,
            "touched": touched,
            "served": served,
            "loaded_at": self.loaded_at,
            "pid": os.getpid(),
        }


def make_handler(model: Model) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"ok": True, "served": model.served})
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/infer":
                self._send(404, {"error": f"no route {self.path}"})
                return
            n = int(self.headers.get("Content-Length") or 0)
            try:
                text = json.loads(self.rfile.read(n) or b"{}")["input"]
                if not isinstance(text, str):
                    raise TypeError("input must be a string")
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": f'expected {{"input": "<text>"}}: {e}'})
                return
            self._send(200, model.infer(text))

        def log_message(self, fmt: str, *args) -> None:  # quiet: one line per request is noise
            pass

    return Handler


def setting(name: str, default: str) -> str:
    """NAME from the environment, else THAW_NAME, else `default`. A deployed function sets the
    plain names (the platform reserves THAW_* for itself); benchmarks and images use THAW_*."""
    return os.environ.get(name) or os.environ.get(f"THAW_{name}") or default


def main() -> None:
    port = int(os.environ["PORT"])
    bind = setting("BIND", os.environ.get("HOST", "127.0.0.1"))  # HOST: 0.0.0.0 in the sandbox
    model_dir = Path(setting("MODEL_DIR", "") or Path.home() / ".cache/thaw/models")
    size_mib = int(setting("MODEL_MIB", "1024"))
    n_funcs = int(setting("IMPORT_FUNCS", "9000"))

    # A worker may run as PID 1 of its own namespace, where SIGTERM is ignored by default.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    t0 = time.monotonic()
    layers = import_framework(n_funcs)
    t1 = time.monotonic()
    weights, sha = load_weights(ensure_weights(model_dir, size_mib))
    t2 = time.monotonic()
    log(f"imported in {t1 - t0:.2f}s, loaded {size_mib} MiB in {t2 - t1:.2f}s; serving on {port}")
    server = ThreadingHTTPServer((bind, port), make_handler(Model(layers, weights, sha)))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
