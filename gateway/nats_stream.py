"""The `infer.stream.<fn>` responder: a worker's answer relayed to the requester's reply inbox
as it arrives, as a numbered sequence of messages (the protocol is in gateway/README.md).

It runs on a connection of its own, as the bus user `gateway-stream`: only that user may send
many answers to one request (bus_schemas/permissions.py says why, and the bounds). Within them:

- every message carries `Thaw-Seq` (1, 2, 3, ...); chunks carry the worker's body in order,
  split to fit the server's max payload; the last message carries `Thaw-Status` (200: the
  answer is complete; anything else has a JSON error body saying why);
- a stream that would outgrow STREAM_MAX_MESSAGES or STREAM_MAX_S ends with an error message
  while NATS still lets it through, never in silence;
- a requester that went away is noticed through NATS' no-responders status: every chunk names a
  probe subject of this gateway's as its reply, and a message the server delivered to nobody
  comes back there as a 503. The worker's answer is then abandoned (its connection closed, its
  slot returned) instead of being read to its end;
- nothing piles up unboundedly: a publish waits while nats-py's outgoing buffer is full, and
  the worker's connection stops being read while too much of its answer is unsent
  (gateway/upstream.py).
"""

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus_schemas import headers as H
from bus_schemas import permissions as P
from bus_schemas import subjects
from bus_schemas.codec import encode
from bus_schemas.subjects import GATEWAY_QUEUE_GROUP, last_token

from gateway import content_type
from gateway.dispatcher import Reply
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics
from gateway.upstream import StreamedBody

log = logging.getLogger(__name__)

DEADLINE_MARGIN_S = 15  # a stream ends this long before NATS would stop letting its answers through
NO_RESPONDERS = "503"  # the status NATS puts on a message that reached no subscriber
EDGE = "nats-stream"  # the metrics' edge label
_WIDEST_SEQ = str(P.STREAM_MAX_MESSAGES)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """One stream's bounds: bytes per message (headers included), messages, seconds."""

    max_payload: int
    max_messages: int = P.STREAM_MAX_MESSAGES
    max_s: float = P.STREAM_MAX_S - DEADLINE_MARGIN_S


class RequesterGone(Exception):
    """NATS delivered one of the stream's messages to nobody: the requester unsubscribed or left."""


def header_bytes(headers: dict[str, str]) -> int:
    """What nats-py puts on the wire for `headers` (a "NATS/1.0" line, a line each, a blank
    line); it counts against the max payload with the body."""
    return 12 + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in order, in pieces of at most `size` bytes; nothing for empty data."""
    if len(data) <= size:
        if data:
            yield data
        return
    view = memoryview(data)
    for at in range(0, len(data), size):
        yield bytes(view[at:at + size])


class ReplyStream:
    """One request's answer, published as numbered messages to its reply subject."""

    def __init__(self, nc: Client, reply: str, probe: str, limits: StreamLimits):
        self.nc, self.reply, self.probe, self.limits = nc, reply, probe, limits
        self.seq = 0

    async def send(self, data: bytes, ctype: str) -> None:
        """Publish `data` as chunk messages. Raises ApiError (502) when they and the end message
        would not fit in the stream's allowed messages."""
        chunk_headers = {H.SEQ: _WIDEST_SEQ, H.CONTENT_TYPE: ctype} if ctype else {H.SEQ: _WIDEST_SEQ}
        room = self.limits.max_payload - header_bytes(chunk_headers)
        for piece in pieces(data, room):
            if self.seq + 1 >= self.limits.max_messages:
                raise ApiError(502, "stream_too_long", f"the answer needs more than {self.limits.max_messages} "
                               "messages, the most a stream over NATS may have; ask for less, or call it over "
                               "HTTP, where a stream has no such bound")
            self.seq += 1
            chunk_headers[H.SEQ] = str(self.seq)
            # The probe reply: NATS answers it with a 503 when this reached nobody (RequesterGone).
            await self.nc.publish(self.reply, piece, reply=self.probe, headers=chunk_headers)

    async def end(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """The last message: the answer's status, and for an error its JSON body."""
        self.seq += 1
        end_headers = {H.SEQ: str(self.seq), H.STATUS: str(status), **(headers or {})}
        await self.nc.publish(self.reply, body, headers=end_headers)

    async def end_with(self, err: ApiError) -> None:
        out = {H.CONTENT_TYPE: "application/json"}
        if err.retry_after_s:
            out[H.RETRY_AFTER] = str(max(1, round(err.retry_after_s)))
        await self.end(err.status, encode(err.body()), out)


class NatsStreams:
    """Serves `infer.stream.*` (queue group `gateway`) on `nc`, the `gateway-stream` user's
    connection. `call(msg)` is the same checked invocation `infer.request.*` makes (NatsApi.call):
    it returns the worker's Reply or raises ApiError."""

    def __init__(self, nc: Client, call: Callable[[Msg], Awaitable[Reply]], metrics: GatewayMetrics):
        self.nc, self._call, self.metrics = nc, call, metrics
        self.limits = StreamLimits(max_payload=nc.max_payload)
        self._gone: dict[str, asyncio.Event] = {}  # probe token -> set once its requester is gone
        self._tokens = itertools.count(1)
        self._probe_prefix = ""
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> list[Subscription]:
        self._probe_prefix = self.nc.new_inbox()
        probes = await self.nc.subscribe(f"{self._probe_prefix}.*", cb=self._on_probe)
        requests = await self.nc.subscribe(P.every(subjects.INFER_STREAM), queue=GATEWAY_QUEUE_GROUP,
                                           cb=self._on_request, pending_msgs_limit=65536)
        return [requests, probes]

    async def _on_probe(self, msg: Msg) -> None:
        if (msg.headers or {}).get("Status") == NO_RESPONDERS:
            gone = self._gone.get(last_token(msg.subject))
            if gone is not None:
                gone.set()

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return  # nobody to stream to
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        fn, token = last_token(msg.subject), str(next(self._tokens))
        gone = self._gone[token] = asyncio.Event()
        out = ReplyStream(self.nc, msg.reply, f"{self._probe_prefix}.{token}", self.limits)
        status = 500
        try:
            reply = await self._call(msg)
            status = reply.status
            await self._relay(fn, reply, out, gone)
        except ApiError as err:
            status = err.status
            await _quietly(out.end_with(err), msg.subject)
        except RequesterGone:
            status = 499  # as nginx counts a client that closed the request
            log.info("%s: the requester went away; its worker's answer was abandoned", msg.subject)
        except Exception:
            log.exception("infer.stream on %s failed", msg.subject)
            await _quietly(out.end_with(ApiError(500, "internal", "the gateway failed; see its log")), msg.subject)
        finally:
            del self._gone[token]
            self.metrics.count_call(fn, EDGE, status)

    async def _relay(self, fn: str, reply: Reply, out: ReplyStream, gone: asyncio.Event) -> None:
        ctype = reply.content_type if content_type.fits(reply.content_type) else ""
        end_headers = {H.POD: reply.pod}
        if reply.stream is None:  # answered whole: the same protocol, in as few chunks as fit
            await out.send(reply.body, ctype)
            await out.end(reply.status, headers=end_headers)
            return
        try:
            async with contextlib.aclosing(_until(reply.stream, gone, self.limits.max_s, fn)) as chunks:
                async for chunk in chunks:
                    await out.send(chunk, ctype)
        except ConnectionError as exc:
            raise ApiError(502, "worker_failed", f"{fn}: the worker broke off its streamed answer ({exc}); "
                                                 "the chunks before this message are all it sent") from None
        except TimeoutError:
            raise ApiError(504, "worker_timeout", f"{fn}: the worker sent nothing more for too long; "
                                                  "its answer is cut off here") from None
        finally:
            reply.stream.close()  # a no-op once complete; else the worker's connection is closed
        await out.end(reply.status, headers=end_headers)


async def _until(stream: StreamedBody, gone: asyncio.Event, max_s: float, fn: str) -> AsyncGenerator[bytes, None]:
    """The chunks of `stream` until it ends. Raises RequesterGone as soon as `gone` is set (even
    while the worker is silent), and ApiError (504) past `max_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s
    gone_wait = asyncio.ensure_future(gone.wait())
    try:
        while True:
            following = asyncio.ensure_future(stream.__anext__())
            await asyncio.wait((following, gone_wait), timeout=max(0.0, deadline - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()  # the StreamedBody is abandoned: its worker connection closes
                if gone.is_set():
                    raise RequesterGone()
                raise ApiError(504, "stream_too_long", f"{fn}: the answer ran past {max_s:g}s, the most a stream "
                                                       "over NATS may last; call it over HTTP for longer answers")
            try:
                chunk = following.result()
            except StopAsyncIteration:
                return
            yield chunk
            if gone.is_set():
                raise RequesterGone()
    finally:
        gone_wait.cancel()


async def _quietly(sending: Awaitable[None], subject: str) -> None:
    try:
        await sending
    except Exception as exc:  # the requester may be gone, or NATS reconnecting
        log.debug("could not end the stream of %s: %s", subject, exc)
