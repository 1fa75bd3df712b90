"""One client connection of the HTTP bridge: HTTP/1.1 parsed by httptools (llhttp), answered in
the gateway's own event loop.

The app sees each request as a `Request`: method, path, headers, the body awaited whole or chunk
by chunk, and `response_bytes` or `response_stream` to answer. The app has two entries:
`answer_now(request, done)`, which may take a request whose body is all here and answer it from
callbacks, and the coroutine `answer(request)` for every other. Requests on one connection are
answered in order, one at a time, as HTTP/1.1 pipelining requires. A body the app has not read
yet is held up to a bound, past which the connection stops reading (backpressure, not buffering
without end). A response sent before its request body has all arrived closes the connection,
since the rest of that body cannot be told apart from a next request.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

import httptools

from bus_schemas.codec import encode
from bus_schemas.errors import ErrorBody, ErrorDetail

from gateway.errors import ApiError

log = logging.getLogger(__name__)

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %b\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_CLOSE = b"connection: close\r\n"
_HELD_BODY_BYTES = 1 << 20  # unread body kept per connection before reading pauses
_HEAD_MAX_BYTES = 64 * 1024
_HEADERS_MAX = 100  # header fields per request, as nginx's and Go's defaults bound them too
_PIPELINED_MAX = 16  # requests parsed ahead of their answer before reading pauses
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_JSON = [("content-type", "application/json")]


class _HeadTooLarge(Exception):
    """`why` goes to the client in the 431 answer."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How long a client may take, checked by the server's sweep (no timer per request).

    `head_s`: from a request's first byte to the end of its headers (slowloris sends a header
    line every few seconds forever); `body_idle_s`: a body that is arriving but has not moved
    for this long; `idle_s`: a keep-alive connection with no request."""

    head_s: float = 10.0
    body_idle_s: float = 30.0
    idle_s: float = 75.0


class Request:
    """One request, as the app reads and answers it."""

    __slots__ = ("conn", "method", "path", "query_string", "headers", "http_version", "keep_alive",
                 "_chunks", "_held", "_complete", "_consumed", "_waiter", "answered", "writer", "broken", "close_sent")

    def __init__(self, conn: "HttpConnection", method: str, path: str, query: str, headers: dict,
                 http_version: str, keep_alive: bool):
        self.conn, self.method, self.path, self.query_string = conn, method, path, query
        self.headers, self.http_version, self.keep_alive = headers, http_version, keep_alive
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._complete = False
        self._consumed = False
        self._waiter: asyncio.Future | None = None
        self.answered = False
        self.writer: StreamWriter | None = None
        self.broken: str | None = None
        self.close_sent = False

    # -- the body, fed by the connection
    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._held += len(chunk)
        if self._held > _HELD_BODY_BYTES:
            self.conn.pause_reading()
        if self._waiter is not None:
            self._wake()

    def finish(self) -> None:
        self._complete = True
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _more(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _take(self) -> bytes:
        self._consumed = True
        chunk = self._chunks.popleft()
        self._held -= len(chunk)
        if self._held <= _HELD_BODY_BYTES:
            self.conn.resume_reading()
        return chunk

    @property
    def body_complete(self) -> bool:
        """All of the body has arrived (it may not have been read yet)."""
        return self._complete

    def body_now(self) -> bytes | None:
        """The whole body if it has all arrived and none of it was read yet, else None. It stays
        readable: a call that falls back to the general path reads it again."""
        if not self._complete or self._consumed:
            return None
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        whole = b"".join(chunks)
        chunks.clear()
        chunks.append(whole)
        return whole

    def _drain(self) -> bytes:
        chunks = self._chunks
        out = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._held = 0
        self._consumed = True
        self.conn.resume_reading()
        return out

    # -- the body, read by the app
    async def __call__(self) -> bytes:
        """The whole body (the caller has checked its declared size)."""
        while not self._complete:
            if self.broken:
                raise _bad_body(self.broken)
            if self.conn.lost:
                raise ConnectionError("the client went away before sending the whole body")
            await self._more()
        return self._drain()

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._complete:
                raise StopAsyncIteration
            if self.broken:
                raise _bad_body(self.broken)
            if self.conn.lost:
                raise ConnectionError("the client went away before sending the whole body")
            await self._more()
        return self._take()

    # -- the answer
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answered = True
        self.close_sent = self._close_after()
        self.conn.write(b"%b%bcontent-length: %d\r\n\r\n%b" % (
            _head(status, headers), _CLOSE if self.close_sent else b"", len(body),
            body if self.method != "HEAD" else b""))

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> "StreamWriter":
        self.answered = True
        chunked = self.http_version == "1.1"
        if not chunked:  # HTTP/1.0: the body ends when the connection does
            self.keep_alive = False
        framing = b"transfer-encoding: chunked\r\n\r\n" if chunked else b"\r\n"
        self.close_sent = self._close_after()
        self.conn.write(_head(status, headers) + (_CLOSE if self.close_sent else b"") + framing)
        self.writer = StreamWriter(self.conn, chunked)
        return self.writer

    def _close_after(self) -> bool:
        return not self.keep_alive or not self._complete or self.conn.closing


class StreamWriter:
    """The body of a streamed answer, sent chunk by chunk as the app produces it."""

    __slots__ = ("conn", "chunked", "ended")

    def __init__(self, conn: "HttpConnection", chunked: bool):
        self.conn, self.chunked = conn, chunked
        self.ended = False

    async def send_bytes(self, data: bytes) -> None:
        if self.conn.lost:
            raise ConnectionError("the client went away during a streamed answer")
        if data:
            self.conn.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
            await self.conn.drained()

    def end(self) -> None:
        """The answer is complete. (Not calling it cuts the connection, so a stream that broke off
        upstream never looks whole to the client.)"""
        self.ended = True
        if self.chunked:
            self.conn.write(b"0\r\n\r\n")


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """The status line and `headers`, without the blank line that ends them."""
    status_line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
    return status_line + "".join([f"{name}: {value}\r\n" for name, value in headers]).encode("latin-1")


class App(Protocol):
    """What a connection runs its requests on (`gateway.http_api.HttpApi`): see the module docstring."""

    def answer_now(self, request: Request, done: Callable[[Request], None]) -> bool: ...

    async def answer(self, request: Request) -> None: ...


class HttpConnection(asyncio.Protocol):
    """Parses requests off one connection and runs the app on them in order."""

    def __init__(self, app: App, connections: "set[HttpConnection]") -> None:
        self._app, self._connections = app, connections
        self._parser = httptools.HttpRequestParser(self)
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.closing = False  # the server is stopping: answer what is in flight, then close
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._head_started: float | None = None  # loop time of a request's first byte, until its headers end
        self._current: Request | None = None  # being parsed
        self._queue: deque[Request] = deque()  # parsed, waiting for the one before to be answered
        self._answering = False  # the head of the queue is being answered
        self._refusal: tuple[int, str] | None = None  # a bad request behind those being answered
        self._reading_paused = False
        self._discarding = False
        self._writable: asyncio.Future | None = None
        self.idle_since = self._loop.time()
        self.over_limit = 0  # set by the server when this connection is one too many

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.over_limit:
            self.refuse_overloaded(self.over_limit)
            return
        self._connections.add(self)

    def connection_lost(self, exc) -> None:
        self.lost = True
        self._connections.discard(self)
        for request in (self._current, *self._queue):
            if request is not None:
                request._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self.idle_since = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(501, "upgrades (websockets) are not served here")
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _HeadTooLarge):
                raise
            self._refuse(431, exc.__context__.why)
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._head_bytes = 0
        self._head_started = self._loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > _HEAD_MAX_BYTES:
            raise _HeadTooLarge(f"the request line and headers are over {_HEAD_MAX_BYTES} bytes; send less")

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp sets no bound of its own on a request's head
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _HEAD_MAX_BYTES:
            raise _HeadTooLarge(f"the request line and headers are over {_HEAD_MAX_BYTES} bytes; send less")
        key = name.decode("latin-1").lower()
        if key not in self._headers and len(self._headers) >= _HEADERS_MAX:
            raise _HeadTooLarge(f"more than {_HEADERS_MAX} header fields; send fewer")
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._head_started = None
        path, _, query = self._url.decode("latin-1").partition("?")
        parser = self._parser
        request = Request(self, parser.get_method().decode("latin-1"), path, query, self._headers,
                          parser.get_http_version(), parser.should_keep_alive())
        self._current = request
        self._queue.append(request)
        if len(self._queue) > _PIPELINED_MAX:
            self.pause_reading()
        if not self._answering and _body_may_take_long(self._headers):
            # Let the app see it now: it may refuse it (413) or read the body as it comes.
            self._answer_next()

    def on_body(self, body: bytes) -> None:
        self._current.feed(body)

    def on_message_complete(self) -> None:
        self._current.finish()
        self._current = None
        if not self._answering:
            self._answer_next()

    # -- answering, one request at a time, in order
    def _answer_next(self) -> None:
        request = self._queue[0]
        self._answering = True
        if request.body_complete and self._app.answer_now(request, self._finished):
            return
        if request.headers.get("expect", "").lower() == "100-continue" and not request.body_complete:
            self.transport.write(_CONTINUE)
        task = self._loop.create_task(self._app.answer(request))
        task.add_done_callback(lambda t: self._finished(request, t))

    def _finished(self, request: Request, task: asyncio.Task | None = None) -> None:
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("%s %s failed", request.method, request.path, exc_info=task.exception())
        if not request.answered:
            request.response_bytes(500, _JSON, _error_body("internal", "the gateway failed; see its log"))
        self._answering = False
        self._queue.popleft()
        if request.close_sent or not request.keep_alive or self.lost or self.closing:
            self._refusal = None
            self._linger_close()
            return
        if self._refusal is not None and not self._queue:
            self._refuse(*self._refusal)
            return
        if self._reading_paused and len(self._queue) <= _PIPELINED_MAX and request.body_complete:
            self.resume_reading()
        if request.writer is not None and not request.writer.ended:
            request.keep_alive = False  # a stream the app did not end: the client sees it cut off
        if self.lost or not request.keep_alive or not request.body_complete or self.closing:
            self._linger_close()
            return
        self.idle_since = self._loop.time()
        if self._queue and (self._queue[0].body_complete or _body_may_take_long(self._queue[0].headers)):
            self._answer_next()

    def write(self, data: bytes) -> None:
        if not self.lost:
            self.transport.write(data)

    async def drained(self) -> None:
        if self._writable is not None:
            await self._writable

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.lost:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self.lost and self._refusal is None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed, and close: the stream can't be resynchronised.
        Requests before it are answered first."""
        if self._answering and self._current is not None and self._queue and self._queue[0] is self._current:
            # the request being answered broke mid-body: its reader gets the error, then the connection closes
            self._current.broken = message
            self._current.keep_alive = False
            self._current._wake()
            self._current = None
            self.pause_reading()
            return
        self.pause_reading()
        if self._current is not None and self._queue and self._queue[-1] is self._current:
            self._queue.pop()  # it never parsed whole: not a request to answer
        self._current = None
        if self._answering:
            self._refusal = (status, message)
            return
        body = _error_body({400: "bad_request", 408: "request_timeout", 431: "headers_too_large",
                            503: "overloaded"}.get(status, "not_implemented"), message)
        self.write(b"%b%bcontent-length: %d\r\n\r\n%b" % (_head(status, _JSON), _CLOSE, len(body), body))
        self._linger_close()

    def _linger_close(self) -> None:
        """Close after the answer, reading and dropping what the client still sends for a moment:
        closing with input unread sends a reset, which can destroy the answer before it is read."""
        if self.lost:
            return
        self._discarding = True
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        try:
            self.transport.write_eof()
        except Exception:
            self.transport.close()
            return
        self._loop.call_later(2.0, self.transport.close)

    @property
    def answering(self) -> bool:
        return self._answering

    def enforce(self, deadlines: Deadlines, now: float) -> None:
        """Close a connection whose client is too slow or has gone quiet; called by the sweep."""
        if self.lost:
            return
        if self._head_started is not None and now - self._head_started > deadlines.head_s:
            self._refuse(408, f"the request line and headers did not arrive within {deadlines.head_s:g}s")
        elif self._current is not None and not self._reading_paused and now - self.idle_since > deadlines.body_idle_s:
            # Mid-body: the app may be reading it, so no answer can be sent in order; cut it.
            self.transport.close()
        elif not self._answering and not self._queue and now - self.idle_since > deadlines.idle_s:
            self.transport.close()

    def refuse_overloaded(self, limit: int) -> None:
        self._refuse(503, f"the gateway holds its limit of {limit} connections; retry shortly")

    def close_when_idle(self) -> None:
        self.closing = True
        if not self._answering and self._current is None:
            self.transport.close()


def _body_may_take_long(headers: dict) -> bool:
    """A body that is large, streamed or awaits "100 Continue": the app gets the request before
    the body is all here."""
    length = headers.get("content-length")
    if length is None:
        return "transfer-encoding" in headers
    return not length.isdigit() or int(length) > 65536 or ("expect" in headers and
                                                           headers["expect"].lower() == "100-continue")


def _bad_body(why: str) -> ApiError:
    return ApiError(400, "bad_request", f"malformed HTTP request body: {why}")


def _error_body(code: str, message: str) -> bytes:
    return encode(ErrorBody(error=ErrorDetail(code=code, message=message)))
