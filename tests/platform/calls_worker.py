"""An idempotent test worker for async calls (tests/platform/test_async_calls.py).

A call with an `x-thaw-call-id` header runs once per id: its effect is a line `<id>` appended to
$TMPDIR/effects.log, and a repeat of an id that already ran (a redelivery) is answered from the
worker's record without running again. FAIL_FIRST=K answers 500 to the first K attempts of each
id (attempts are counted before the record is checked); a body of `bad` is answered 400.
SLOW_MS makes each call take that long. POST without a call id: the body `report` answers
{"effects": {id: runs}, "attempts": {id: n}}, read from the effects file. Standard library only;
handles SIGTERM itself (it runs as PID 1 of its own namespace).
"""

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAIL_FIRST = int(os.environ.get("FAIL_FIRST", "0"))
SLOW_S = float(os.environ.get("SLOW_MS", "0")) / 1000
EFFECTS = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"effects-{os.getpid()}.log")
lock = threading.Lock()
attempts: Counter = Counter()
answers: dict[str, bytes] = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b"ok")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        call_id = self.headers.get("x-thaw-call-id")
        if call_id is None:
            self._send(200, report() if body == b"report" else body)
            return
        if SLOW_S:
            time.sleep(SLOW_S)
        self._send(*run_once(call_id, body))

    def log_message(self, *args) -> None:
        pass


def run_once(call_id: str, body: bytes) -> tuple[int, bytes]:
    with lock:
        attempts[call_id] += 1
        if attempts[call_id] <= FAIL_FIRST:
            return 500, b'{"error": "failing on purpose"}'
        if body == b"bad":
            return 400, b'{"error": "bad input"}'
        if call_id not in answers:  # the effect, once per id
            with open(EFFECTS, "a") as f:
                f.write(call_id + "\n")
            answers[call_id] = json.dumps({"call_id": call_id, "echo": body.decode(errors="replace")}).encode()
        return 200, answers[call_id]


def report() -> bytes:
    with lock:
        try:
            with open(EFFECTS) as f:
                effects = Counter(line.strip() for line in f if line.strip())
        except FileNotFoundError:
            effects = Counter()
        return json.dumps({"effects": effects, "attempts": attempts}).encode()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
