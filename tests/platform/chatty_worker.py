"""A worker that writes to its log: `started` once, then `got <body>` for each POST (answered with
the body), and nothing else: a client that hangs up (a health probe cut short, a connection a
restore closed) is not logged. Standard library only; handles SIGTERM itself (PID 1 of its
namespace)."""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(b"ok")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(f"got {body.decode(errors='replace')}", flush=True)
        self._send(body)

    def log_message(self, *args) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # resets, broken pipes, timeouts
            super().handle_error(request, client_address)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = Server((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    print("started", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
