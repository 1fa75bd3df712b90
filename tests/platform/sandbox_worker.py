"""A worker that pries, for the sandbox tests: it reports who it runs as and what it can reach.

POST / with a JSON body, every key optional:
  {"read": [paths], "connect": ["host:port"], "allocate_mib": N, "vram_mib": V, "hold_s": S}
answers {"uid", "gid", "pid", "procs" (pids it can see), "loaded_at", "read": {path: outcome},
"connect": {addr: outcome}} after holding S seconds; `allocate_mib` touches that much memory
first (the kernel kills a worker over its cgroup's limit before it answers); `vram_mib` states
that much GPU memory in use to the mock GPU inventory (agents/vram.py MockMeter). Standard library
only; handles SIGTERM itself (PID 1 of its namespace).
"""

import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOADED_AT = time.time()
KEPT: list[bytearray] = []


def try_read(path: str) -> str:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        return "ok"
    except OSError as exc:
        return type(exc).__name__


def try_connect(addr: str) -> str:
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return "ok"
    except OSError as exc:
        return type(exc).__name__


def allocate(mib: int) -> None:
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    KEPT.append(block)


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
        ask = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if ask.get("allocate_mib"):
            allocate(int(ask["allocate_mib"]))
        if "vram_mib" in ask:
            with open("/tmp/thaw-mock-vram-mib", "w") as f:
                f.write(str(int(ask["vram_mib"])))
        time.sleep(float(ask.get("hold_s", 0)))
        self._send(json.dumps({
            "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "loaded_at": LOADED_AT,
            "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "read": {p: try_read(p) for p in ask.get("read", [])},
            "connect": {a: try_connect(a) for a in ask.get("connect", [])},
        }).encode())

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(float(os.environ.get("WARM_IMPORT_S", "0")))
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
