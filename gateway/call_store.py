"""Where async calls are kept on JetStream: each call's latest state (INFER_RESULTS, last
message per `infer.result.<id>`) and the dead-letter queue (INFER_DLQ, `infer.dlq.<fn>`).

The structs travel as JSON headers and the body (a call's, or its answer) as the payload, so a
body as large as the gateway accepts fits NATS' max payload (bus_schemas/calls.py). Listing
reads a stream through a short-lived ack-free consumer, deleted after use (and by the server
after SCAN_IDLE_S should this gateway die mid-listing).
"""

import logging
import secrets
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from bus_schemas import headers as H
from bus_schemas import streams, subjects
from bus_schemas.calls import AsyncCall, CallRecord, DeadCall
from bus_schemas.codec import DecodeError, decode, encode
from thaw_core import bus

log = logging.getLogger(__name__)
SCAN_BATCH = 256
SCAN_IDLE_S = 10.0
MAX_SCAN = 20_000  # messages read at most by one listing


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int  # its INFER_DLQ sequence, to delete it once redriven
    call: AsyncCall
    dead: DeadCall
    body: bytes


def header_struct(headers: dict | None, name: str, type_):
    """The struct in header `name`, or None when absent or unreadable (junk on the bus)."""
    raw = (headers or {}).get(name)
    if not raw:
        return None
    try:
        return decode(raw, type_)
    except DecodeError:
        return None


class CallStore:
    def __init__(self, js: JetStreamContext):
        self._js = js

    async def put(self, record: CallRecord, result: bytes = b"") -> None:
        """Record a call's state (and, once final, its answer). The id makes a repeat of the same
        step (a redelivered attempt) one message."""
        msg_id = f"state:{record.call_id}:{record.redrives}:{record.attempts}:{record.status}"
        await bus.publish_bytes(self._js, subjects.infer_result(record.call_id), result, msg_id,
                                {H.CALL_STATE: encode(record).decode()})

    async def get(self, call_id: str) -> tuple[CallRecord, bytes] | None:
        try:
            msg = await self._js.get_last_msg(streams.INFER_RESULTS.name, subjects.infer_result(call_id))
        except NotFoundError:
            return None
        record = header_struct(msg.headers, H.CALL_STATE, CallRecord)
        return None if record is None else (record, msg.data or b"")

    async def recent(self, tenant: str, fn: str = "", status: str = "", limit: int = 100) -> list[CallRecord]:
        """The tenant's calls, newest state first (optionally of one function and status)."""
        found = []
        for msg in await self._scan(streams.INFER_RESULTS.name, subjects.infer_result("*"), last_per_subject=True):
            record = header_struct(msg.headers, H.CALL_STATE, CallRecord)
            if record and record.tenant == tenant and fn in ("", record.fn) and status in ("", record.status):
                found.append(record)
        found.sort(key=lambda r: r.updated_ms, reverse=True)
        return found[:limit]

    async def bury(self, call: AsyncCall, body: bytes, dead: DeadCall) -> None:
        """Put a call in the dead-letter queue, with its body for a redrive."""
        await bus.publish_bytes(self._js, subjects.infer_dlq(call.fn), body, f"dlq:{call.call_id}:{call.redrives}",
                                {H.CALL: encode(call).decode(), H.DEAD: encode(dead).decode(),
                                 H.CONTENT_TYPE: call.content_type})

    async def dead(self, tenant: str, fn: str = "") -> list[DeadLetter]:
        """The tenant's dead letters, oldest first (optionally of one function)."""
        subject = subjects.infer_dlq(fn) if fn else subjects.infer_dlq("*")
        letters = []
        for msg in await self._scan(streams.INFER_DLQ.name, subject, last_per_subject=False):
            call = header_struct(msg.headers, H.CALL, AsyncCall)
            dead = header_struct(msg.headers, H.DEAD, DeadCall)
            if call and dead and call.tenant == tenant:
                letters.append(DeadLetter(msg.metadata.sequence.stream, call, dead, msg.data or b""))
        return letters

    async def forget_dead(self, letter: DeadLetter) -> None:
        try:
            await self._js.delete_msg(streams.INFER_DLQ.name, letter.seq)
        except NotFoundError:
            pass  # another gateway's redrive got there first

    async def _scan(self, stream: str, filter_subject: str, last_per_subject: bool) -> list:
        """Every message of `stream` on `filter_subject` (the last per subject, or all), up to
        MAX_SCAN, through a consumer made for this one read."""
        name = f"scan-{secrets.token_hex(6)}"
        deliver = DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL
        config = ConsumerConfig(name=name, filter_subject=filter_subject, ack_policy=AckPolicy.NONE,
                                deliver_policy=deliver, inactive_threshold=SCAN_IDLE_S, mem_storage=True,
                                num_replicas=1)
        info = await self._js.add_consumer(stream, config=config)
        out: list = []
        try:
            pending = info.num_pending
            if not pending:
                return out
            sub = await self._js.pull_subscribe_bind(consumer=name, stream=stream)
            try:
                while pending and len(out) < MAX_SCAN:
                    try:
                        msgs = await sub.fetch(min(SCAN_BATCH, pending), timeout=5)
                    except TimeoutError:  # what was pending expired meanwhile: that is all there is
                        break
                    out.extend(msgs)
                    pending = msgs[-1].metadata.num_pending
            finally:
                await sub.unsubscribe()
        finally:
            try:
                await self._js.delete_consumer(stream, name)
            except Exception as exc:  # it expires by itself after SCAN_IDLE_S
                log.debug("could not delete consumer %s on %s: %s", name, stream, exc)
        return out
