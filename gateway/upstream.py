"""Keep-alive HTTP/1.1 calls from the gateway to workers, lean enough for the warm path.

A general client (aiohttp's) costs more per call than the worker it calls; on the warm path the
gateway only ever POSTs a body to a worker it already knows and reads one response, so it keeps
a pool of raw connections per worker and parses responses with httptools (llhttp, the parser
Node.js uses). Connection errors surface as `UpstreamUnreachable` only when no byte of the call
reached the worker, so the caller may safely retry it on another worker.
"""

import asyncio
from collections import deque
from urllib.parse import urlsplit

import httptools


class UpstreamUnreachable(ConnectionError):
    """The call never reached the worker: safe to retry elsewhere."""


class UpstreamBroken(ConnectionError):
    """The connection broke after the call was sent: the worker may have processed it."""


class _Response:
    __slots__ = ("status", "content_type", "chunks", "chunked", "stream")

    def __init__(self) -> None:
        self.status = 0
        self.content_type = "application/octet-stream"
        self.chunks: list[bytes] = []
        self.chunked = False
        self.stream: asyncio.Queue | None = None  # set for responses passed through as they come


class StreamedBody:
    """A worker's answer that is passed on chunk by chunk (server-sent events, chunked bodies).

    Iterate it to get the chunks; `on_close` callbacks run once the answer ended or was
    abandoned, so the caller can give its worker slot back only then."""

    def __init__(self, queue: asyncio.Queue, idle_timeout_s: float, done) -> None:
        self._queue, self._idle_timeout_s, self._done = queue, idle_timeout_s, done
        self._on_close: list = []
        self._closed = False

    def on_close(self, callback) -> None:
        self._on_close.append(callback)

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        try:
            item = await asyncio.wait_for(self._queue.get(), self._idle_timeout_s)
        except BaseException:
            self.close(complete=False)
            raise
        if item is None:
            self.close(complete=True)
            raise StopAsyncIteration
        if isinstance(item, Exception):
            self.close(complete=False)
            raise item
        return item

    def close(self, complete: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._done(complete)
        for callback in self._on_close:
            callback()


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.response: _Response | None = None
        self.keep_alive = True
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        broken = UpstreamBroken(f"worker closed the connection ({exc or 'EOF'})")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(broken)
        elif self.response is not None and self.response.stream is not None:
            self.response.stream.put_nowait(broken)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.keep_alive = False
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(UpstreamBroken(f"worker sent a malformed response: {exc}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.response = _Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.response.content_type = value.decode("latin-1")
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            self.response.chunked = True

    def on_headers_complete(self) -> None:
        response = self.response
        response.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if response.chunked or response.content_type.startswith("text/event-stream"):
            # Pass it on as it comes: a streamed answer (tokens, events) must not wait for its end.
            response.stream = asyncio.Queue()
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self.response.stream is not None:
            self.response.stream.put_nowait(body)
        else:
            self.response.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.response.stream is not None:
            self.response.stream.put_nowait(None)
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.response)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Upstream:
    """One idle-connection pool per worker endpoint."""

    def __init__(self, max_idle_per_worker: int = 512):
        self._idle: dict[str, deque[_Conn]] = {}
        self._max_idle = max_idle_per_worker

    async def post(self, endpoint: str, path: str, body: bytes, content_type: str,
                   timeout_s: float, extra_headers: str = "") -> tuple[int, str, "bytes | StreamedBody"]:
        """(status, content type, body) of POST endpoint+path; the body is a StreamedBody when the
        worker streams (chunked or text/event-stream). Raises UpstreamUnreachable, UpstreamBroken
        or TimeoutError. `extra_headers` are "Name: value\\r\\n" lines."""
        conn, reused = await self._conn(endpoint)
        try:
            return await self._send(conn, endpoint, path, body, content_type, timeout_s, extra_headers)
        except UpstreamBroken:
            if not reused:
                raise
            # A kept-alive connection the worker had closed: the call never reached it.
            conn, _ = await self._conn(endpoint, fresh=True)
            return await self._send(conn, endpoint, path, body, content_type, timeout_s, extra_headers)

    async def _send(self, conn: _Conn, endpoint: str, path: str, body: bytes, content_type: str,
                    timeout_s: float, extra_headers: str) -> tuple[int, str, "bytes | StreamedBody"]:
        host = endpoint[7:] if endpoint.startswith("http://") else endpoint
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{extra_headers}"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        loop = asyncio.get_running_loop()
        waiter = conn.waiter = loop.create_future()
        conn.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            conn.transport.write(body)
        # A timer instead of asyncio.wait_for, which costs a task per call on the hot path.
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            response = await waiter
        except BaseException:
            conn.transport.close()
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if response.stream is not None:
            def done(complete: bool) -> None:
                if complete:
                    self._give_back(endpoint, conn)
                else:  # abandoned mid-answer: the rest would confuse the next call
                    conn.transport.close()
            return response.status, response.content_type, StreamedBody(response.stream, timeout_s, done)
        self._give_back(endpoint, conn)
        return response.status, response.content_type, b"".join(response.chunks)

    async def _conn(self, endpoint: str, fresh: bool = False) -> tuple[_Conn, bool]:
        idle = self._idle.get(endpoint)
        while idle and not fresh:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        url = urlsplit(endpoint)
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_Conn, url.hostname, url.port)
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect to {endpoint}: {exc.strerror or exc}") from None
        return conn, False

    def _give_back(self, endpoint: str, conn: _Conn) -> None:
        if conn.closed or not conn.keep_alive:
            conn.transport.close()
            return
        idle = self._idle.setdefault(endpoint, deque())
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.transport.close()

    def forget(self, endpoint: str) -> None:
        for conn in self._idle.pop(endpoint, ()):
            conn.transport.close()

    def close(self) -> None:
        for endpoint in list(self._idle):
            self.forget(endpoint)
