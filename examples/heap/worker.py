"""A worker whose state is anonymous memory: what a lazy restore is for (bench/restore_sizes.py).

On start it fills HEAP_MIB MiB of anonymous memory (pseudo-random, so a page that came back
wrong or as zeros shows) and records a digest of it. Then:

- ``GET /health``: 200;
- ``GET /little``: reads 256 pages spread over the heap (a request that touches a little of a
  large state, as a model server answering one query does with its caches);
- ``GET /all``: reads every page and says whether the heap still matches its digest (a request
  that needs all of it, as a first pass over every weight does).

``POST`` to either path does the same (the gateway invokes with POST). Both answer JSON with
``served`` (a counter that survives a restore) and ``pid``.
Environment: PORT (required), HOST (default 127.0.0.1), HEAP_MIB (default 256).
"""

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = 4096
LITTLE_PAGES = 256


def fill(mib: int) -> bytearray:
    block = bytearray(os.urandom(1 << 20))
    heap = bytearray(mib << 20)
    for i in range(mib):  # each MiB differs, so a page restored in the wrong place shows
        block[:8] = i.to_bytes(8, "little")
        heap[i << 20:(i + 1) << 20] = block
    return heap


def digest(heap: bytearray, step: int = 1) -> str:
    """SHA-256 of one byte per page (every `step`-th page): touches each page it reads."""
    return hashlib.sha256(heap[:: PAGE * step]).hexdigest()


def main() -> None:
    heap = fill(int(os.environ.get("HEAP_MIB", "256")))
    expected = digest(heap)
    served = 0
    lock = threading.Lock()
    little_step = max(1, len(heap) // PAGE // LITTLE_PAGES)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            nonlocal served
            if self.path == "/health":
                return self._send({"ok": True})
            if self.path == "/little":
                body = {"digest": digest(heap, little_step)}
            elif self.path == "/all":
                body = {"intact": digest(heap) == expected}
            else:
                return self._send({"error": "unknown path; use /little, /all or /health"}, 404)
            with lock:
                served += 1
                body.update(served=served, pid=os.getpid(), heap_mib=len(heap) >> 20)
            self._send(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def _send(self, body: dict, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    print(f"heap worker: {len(heap) >> 20} MiB on port {os.environ['PORT']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
