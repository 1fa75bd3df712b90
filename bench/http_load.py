"""A closed-loop HTTP/1.1 load generator in the style of wrk: N keep-alive connections, each
sending its next request the moment the previous answer is complete.

Why not a coroutine per call: on a 2-core machine the load generator takes CPU from the very
servers it measures, and a task, a future and a client object per call cost it more than the
echo worker spends answering. Here a call is one prebuilt `write` and the callbacks of
httptools' response parser, so the measurement says more about the servers and less about the
client (wrk and oha are built the same way, natively).
"""

import asyncio
import time

import httptools


def request_bytes(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One connection of a run: sends, waits for the whole answer, records it, sends again."""

    def __init__(self) -> None:
        self._run: _Run | None = None  # set by each run that uses this connection
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._sent_at = 0.0

    def connection_made(self, transport) -> None:
        self._transport = transport

    def connection_lost(self, exc) -> None:
        if self._run is not None:
            self._run.failed(f"connection lost: {exc or 'closed by the server'}")

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._run.failed(f"malformed response: {exc}")

    def send(self, run: "_Run") -> None:
        self._run = run
        self._sent_at = time.perf_counter()
        self._transport.write(run.request)

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        run = self._run
        run.latencies_ms.append((now - self._sent_at) * 1000)
        if self._parser.get_status_code() != 200:
            run.failed(f"answered {self._parser.get_status_code()}")
        elif now < run.stop_at and len(run.latencies_ms) < run.max_calls:
            self._sent_at = now
            self._transport.write(run.request)
        else:
            run.finished_one()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Run:
    def __init__(self, request: bytes, seconds: float, max_calls: float):
        self.request, self.seconds, self.max_calls = request, seconds, max_calls
        self.latencies_ms: list[float] = []
        self.stop_at = 0.0
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._running = 0

    def start(self, conns: list[_Connection]) -> None:
        self.stop_at = time.perf_counter() + self.seconds
        self._running = len(conns)
        for conn in conns:
            conn.send(self)

    def finished_one(self) -> None:
        self._running -= 1
        if self._running == 0 and not self.done.done():
            self.done.set_result(None)

    def failed(self, why: str) -> None:
        self.stop_at = 0.0  # no connection sends again
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))


class ClosedLoop:
    """Keep-alive connections to one URL, opened once and reused by every `run`."""

    def __init__(self, host: str, port: int, path: str, body: bytes, headers: dict[str, str]):
        self._host, self._port = host, port
        self._request = request_bytes(f"{host}:{port}", path, body, headers)
        self._conns: list[_Connection] = []

    async def run(self, connections: int, seconds: float = 3600.0,
                  max_calls: float = float("inf")) -> tuple[float, list[float]]:
        """Calls for `seconds` (or until about `max_calls`) with `connections` calls always in
        flight: (calls/s, latencies in ms). Raises RuntimeError on an answer other than 200."""
        run = _Run(self._request, seconds, max_calls)
        loop = asyncio.get_running_loop()
        while len(self._conns) < connections:
            _, conn = await loop.create_connection(_Connection, self._host, self._port)
            self._conns.append(conn)
        started = time.perf_counter()
        run.start(self._conns[:connections])
        await run.done
        return len(run.latencies_ms) / (time.perf_counter() - started), run.latencies_ms

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()

