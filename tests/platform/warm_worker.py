"""A worker whose start is slow and whose state shows where it came from, for snapshot tests.

Start-up sleeps WARM_IMPORT_S seconds and builds a little heap (like importing a framework).
POST / answers {"loaded_at", "served", "pid"}: a worker restored from a snapshot answers with
the `loaded_at` of the worker it was taken from. Standard library only; handles SIGTERM itself
(it runs as PID 1 of its own namespace).
"""

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

time.sleep(float(os.environ.get("WARM_IMPORT_S", "2")))
HEAP = [str(i) * 8 for i in range(200_000)]
LOADED_AT = time.time()
served = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(b"ok", "text/plain")

    def do_POST(self) -> None:
        global served
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            served += 1
            n = served
        self._send(json.dumps({"loaded_at": LOADED_AT, "served": n, "pid": os.getpid()}).encode())

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    print(f"warm worker pid {os.getpid()} on {os.environ['PORT']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
