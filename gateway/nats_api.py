"""The `infer.request.<fn>` responder: a core request/reply edge beside HTTP.

Several gateways share the subject through the queue group `gateway`. The request carries the
API key in an `Authorization: Bearer` header; the reply carries the worker's body, with
`Thaw-Status` holding the HTTP-like status. Errors reply with a JSON error body and a 4xx/5xx
`Thaw-Status`, never silence. A streamed answer is gathered whole here; `infer.stream.<fn>`
(nats_stream.py) passes it on as it arrives.
"""

import asyncio
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus_schemas import headers as H
from bus_schemas.codec import encode
from bus_schemas.subjects import GATEWAY_QUEUE_GROUP, last_token

from gateway.auth import KeyCache
from gateway.content_type import checked as content_type_checked
from gateway.dispatcher import Dispatcher, Reply
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)


async def _gathered(stream, fn: str) -> bytes:
    try:
        return b"".join([chunk async for chunk in stream])
    except (ConnectionError, TimeoutError) as exc:
        raise ApiError(502, "worker_failed", f"{fn}: the worker broke off its streamed answer ({exc})") from None


class NatsApi:
    def __init__(self, nc: Client, dispatcher: Dispatcher, keys: KeyCache, max_body_bytes: int,
                 metrics: GatewayMetrics):
        self.nc, self.d, self.keys, self.max_body_bytes = nc, dispatcher, keys, max_body_bytes
        self.metrics = metrics
        self._tasks: set[asyncio.Task] = set()

    async def start(self):
        return await self.nc.subscribe("infer.request.*", queue=GATEWAY_QUEUE_GROUP, cb=self._on_msg,
                                       pending_msgs_limit=65536)

    async def _on_msg(self, msg: Msg) -> None:
        if not msg.reply:
            return  # nobody to answer: a request must be a request
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def call(self, msg: Msg) -> Reply:
        """Check a request (size, Content-Type, API key) and invoke its function; both bus edges,
        `infer.request.*` and `infer.stream.*` (nats_stream.py), call it. Raises ApiError."""
        headers = msg.headers or {}
        if len(msg.data) > self.max_body_bytes:
            raise ApiError(413, "body_too_large", f"request body is over {self.max_body_bytes} bytes")
        content_type = content_type_checked(headers.get(H.CONTENT_TYPE), H.CONTENT_TYPE)
        tenant = await self.keys.tenant(headers.get(H.AUTHORIZATION))
        return await self.d.invoke(tenant, last_token(msg.subject), msg.data, content_type)

    async def _handle(self, msg: Msg) -> None:
        fn = last_token(msg.subject)
        status = 500
        try:
            reply = await self.call(msg)
            status = reply.status
            # A bus reply is one message: a streamed answer is gathered whole.
            body = await _gathered(reply.stream, fn=last_token(msg.subject)) if reply.stream else reply.body
            await self._respond(msg, body, {H.STATUS: str(reply.status), H.CONTENT_TYPE: reply.content_type,
                                                  H.POD: reply.pod})
        except ApiError as err:
            status = err.status
            out = {H.STATUS: str(err.status), H.CONTENT_TYPE: "application/json"}
            if err.retry_after_s:
                out[H.RETRY_AFTER] = str(max(1, round(err.retry_after_s)))
            await self._respond(msg, encode(err.body()), out)
        except Exception:
            log.exception("infer.request on %s failed", msg.subject)
            body = encode(ApiError(500, "internal", "the gateway failed; see its log").body())
            await self._respond(msg, body, {H.STATUS: "500", H.CONTENT_TYPE: "application/json"})
        finally:
            self.metrics.count_call(fn, "nats", status)

    async def _respond(self, msg: Msg, body: bytes, headers: dict[str, str]) -> None:
        try:
            await self.nc.publish(msg.reply, body, headers=headers)
        except Exception as exc:  # the requester may be gone, or NATS reconnecting
            log.debug("could not answer %s: %s", msg.subject, exc)
