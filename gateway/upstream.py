"""Keep-alive HTTP/1.1 calls from the gateway to workers, lean enough for the warm path.

A general client (aiohttp's) costs more per call than the worker it calls; on the warm path the
gateway only ever POSTs a body to a worker it already knows and reads one response, so it keeps
a pool of raw connections per worker and parses responses with httptools (llhttp, the parser
Node.js uses). Connection errors surface as `UpstreamUnreachable` only when no byte of the call
reached the worker, so the caller may safely retry it on another worker.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

log = logging.getLogger(__name__)

# A streamed answer's chunks held for a slow reader (an HTTP client, or a bus stream waiting on
# NATS) before the worker's connection is no longer read; reading resumes at half. TCP then
# slows the worker down instead of the gateway's memory filling up.
STREAM_QUEUE_HIGH = 32  # reads, each at most 256 KiB (asyncio's read size)


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

    def __init__(self, queue: asyncio.Queue, idle_timeout_s: float, done,
                 resume: Callable[[], None] | None = None) -> None:
        self._queue, self._idle_timeout_s, self._done = queue, idle_timeout_s, done
        self._resume = resume  # reads the worker's connection again once the queue has room
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
        if self._resume is not None and self._queue.qsize() <= STREAM_QUEUE_HIGH // 2:
            self._resume()
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
        self.call: Call | None = None  # the call waiting for this connection's next response
        self.response: _Response | None = None
        self.keep_alive = True
        self.closed = False
        self.paused = False  # reading paused while a streamed answer waits for its reader
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def resume_reading(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.closed = True
        broken = UpstreamBroken(f"worker closed the connection ({exc or 'EOF'})")
        if self.call is not None and not self.call.done:
            self.call.settle(error=broken)
        elif self.response is not None and self.response.stream is not None:
            self.response.stream.put_nowait(broken)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.keep_alive = False
            if self.call is not None and not self.call.done:
                self.call.settle(error=UpstreamBroken(f"worker sent a malformed response: {exc}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.response = _Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)  # most headers are neither: skip them without lower-casing
        if size == 12 and name.lower() == b"content-type":
            self.response.content_type = value.decode("latin-1")
        elif size == 17 and name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            self.response.chunked = True

    def on_headers_complete(self) -> None:
        response = self.response
        response.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if response.chunked or response.content_type.startswith("text/event-stream"):
            # Pass it on as it comes: a streamed answer (tokens, events) must not wait for its end.
            response.stream = asyncio.Queue()
            if self.call is not None and not self.call.done:
                self.call.settle(response)

    def on_body(self, body: bytes) -> None:
        stream = self.response.stream
        if stream is not None:
            stream.put_nowait(body)
            if stream.qsize() >= STREAM_QUEUE_HIGH and not self.paused:
                self.paused = True
                self.transport.pause_reading()
        else:
            self.response.chunks.append(body)

    def on_message_complete(self) -> None:
        # Settling may run the caller's callback, which may start the next call on this very
        # connection: nothing here touches the connection's call afterwards.
        if self.response.stream is not None:
            self.response.stream.put_nowait(None)
        elif self.call is not None and not self.call.done:
            self.call.settle(self.response)


class Call:
    """One request written to a worker. It is settled once, with the response or an error, and
    then runs its callback (the warm path, from callbacks) or resolves its future (`post`)."""

    __slots__ = ("endpoint", "conn", "deadline", "reused", "timeout_s", "done", "response", "error",
                 "_callback", "future")

    def __init__(self, endpoint: str, conn: _Conn, deadline: float, reused: bool, timeout_s: float,
                 callback: Callable[["Call"], None] | None):
        self.endpoint, self.conn, self.deadline = endpoint, conn, deadline
        self.reused, self.timeout_s = reused, timeout_s
        self.done = False
        self.response: _Response | None = None
        self.error: BaseException | None = None
        self._callback = callback
        self.future = None if callback is not None else asyncio.get_running_loop().create_future()  # for post

    def settle(self, response: _Response | None = None, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done, self.response, self.error = True, response, error
        callback = self._callback
        if callback is not None:
            # Dropped once run: it usually holds the caller, which holds this call, and a cycle
            # per call left ~10 objects a call for the cyclic collector (~6% of gateway CPU).
            self._callback = None
            callback(self)
        elif not self.future.done():
            self.future.set_result(None)

    @property
    def retryable(self) -> bool:
        """Broken on a kept-alive connection the worker had closed: the call never reached it."""
        return self.reused and isinstance(self.error, UpstreamBroken)


class Upstream:
    """One idle-connection pool per worker endpoint.

    `start` writes a call on a kept-alive connection without suspending and `outcome` reads its
    result once settled: the gateway's warm path uses the two from callbacks. `post` is the same
    call as one coroutine, connecting when it must."""

    def __init__(self, max_idle_per_worker: int = 512):
        self._idle: dict[str, deque[_Conn]] = {}
        self._max_idle = max_idle_per_worker
        # Calls in flight, for one sweep that times them out: a timer per call cost more.
        self._in_flight: set[Call] = set()
        self._sweeper: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one the first call ran on
        # Request heads up to the body length, by (endpoint, path, content type, extra headers):
        # the few a gateway sends, formatted once instead of on every call.
        self._heads: dict[tuple[str, str, str, str], bytes] = {}

    def start(self, endpoint: str, path: str, body: bytes, content_type: str, timeout_s: float,
              extra_headers: str = "", conn: _Conn | None = None,
              callback: Callable[[Call], None] | None = None) -> Call | None:
        """Write the call on `conn`, or on an idle kept-alive connection; None when there is none.
        `callback(call)` runs once it is settled (without it, `post` awaits it)."""
        key = (endpoint, path, content_type, extra_headers)
        head = self._heads.get(key) if not extra_headers else _head_prefix(*key)  # per-call headers: not cached
        if head is None:  # formatted before a connection is taken, so a bad header value leaks none
            if len(self._heads) >= 1024:  # content types come from clients: keep it bounded
                self._heads.clear()
            head = self._heads[key] = _head_prefix(*key)
        reused = conn is None
        if conn is None:
            conn = self._idle_conn(endpoint)
            if conn is None:
                return None
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._sweeper = loop.create_task(self._time_out_overdue_calls())
        call = conn.call = Call(endpoint, conn, loop.time() + timeout_s, reused, timeout_s, callback)
        if len(body) < 65536:
            conn.transport.write(b"%b%d\r\n\r\n%b" % (head, len(body), body))
        else:
            conn.transport.write(b"%b%d\r\n\r\n" % (head, len(body)))
            conn.transport.write(body)
        self._in_flight.add(call)
        return call

    def outcome(self, call: Call) -> tuple[int, str, "bytes | StreamedBody"]:
        """(status, content type, body) of a settled call; the body is a StreamedBody when the
        worker streams (chunked or text/event-stream). Raises the call's UpstreamBroken or
        TimeoutError."""
        self._in_flight.discard(call)
        conn = call.conn
        if conn.call is call:
            conn.call = None
        if call.error is not None:
            conn.transport.close()
            raise call.error
        response = call.response
        if response.stream is not None:
            def done(complete: bool) -> None:
                if complete:
                    self._give_back(call.endpoint, conn)
                else:  # abandoned mid-answer: the rest would confuse the next call
                    conn.transport.close()
            return (response.status, response.content_type,
                    StreamedBody(response.stream, call.timeout_s, done, resume=conn.resume_reading))
        self._give_back(call.endpoint, conn)
        chunks = response.chunks
        return response.status, response.content_type, chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def post(self, endpoint: str, path: str, body: bytes, content_type: str,
                   timeout_s: float, extra_headers: str = "") -> tuple[int, str, "bytes | StreamedBody"]:
        """POST endpoint+path and wait for the answer (see `outcome`). Raises UpstreamUnreachable,
        UpstreamBroken or TimeoutError. `extra_headers` are "Name: value\\r\\n" lines."""
        call = self.start(endpoint, path, body, content_type, timeout_s, extra_headers)
        if call is not None:
            await self._settled(call)
            if not call.retryable:
                return self.outcome(call)
            self._in_flight.discard(call)
            call.conn.transport.close()
        conn = await self._connect(endpoint)
        call = self.start(endpoint, path, body, content_type, timeout_s, extra_headers, conn=conn)
        assert call is not None  # given a connection, start always writes the call
        await self._settled(call)
        return self.outcome(call)

    async def _settled(self, call: Call) -> None:
        """Wait for the call to be settled; a waiter that is cancelled abandons the call and its
        connection."""
        try:
            await call.future  # type: ignore[misc]  # a call without a callback has a future
        except asyncio.CancelledError:
            self._in_flight.discard(call)
            call.conn.call = None
            call.conn.transport.close()
            raise

    async def _time_out_overdue_calls(self, every_s: float = 0.25) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every_s)
            now = loop.time()
            for call in [c for c in self._in_flight if c.deadline <= now]:
                self._in_flight.discard(call)
                try:
                    call.settle(error=TimeoutError())
                except Exception:  # a caller's callback failed: it must not stop the sweep
                    log.exception("a timed-out call's callback failed")

    def _idle_conn(self, endpoint: str) -> _Conn | None:
        idle = self._idle.get(endpoint)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connect(self, endpoint: str) -> _Conn:
        url = urlsplit(endpoint)
        try:
            # A worker's endpoint is always http://host:port (its agent writes it).
            _, conn = await asyncio.get_running_loop().create_connection(_Conn, url.hostname, url.port)  # type: ignore[arg-type]
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect to {endpoint}: {exc.strerror or exc}") from None
        return conn

    def _give_back(self, endpoint: str, conn: _Conn) -> None:
        if conn.closed or not conn.keep_alive:
            conn.transport.close()
            return
        idle = self._idle.get(endpoint)
        if idle is None:
            idle = self._idle[endpoint] = deque()
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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._loop = None


def _head_prefix(endpoint: str, path: str, content_type: str, extra_headers: str) -> bytes:
    """Raises ValueError for a value that cannot go on an HTTP/1.1 header line (the edges refuse
    those with a 400 first; this keeps a missed one from splitting the request)."""
    if not (content_type.isascii() and content_type.isprintable()):
        raise ValueError(f"Content-Type {content_type!r} is not printable ASCII")
    host = endpoint[7:] if endpoint.startswith("http://") else endpoint
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{extra_headers}"
            "Content-Length: ").encode("latin-1")
