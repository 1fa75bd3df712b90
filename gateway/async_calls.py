"""The async-call consumer: every gateway pulls from one durable on the INFER_ASYNC work queue
(`gateway-async`), so a call runs on one gateway at a time, and runs it through the same
`Dispatcher.invoke` as a sync call, with its id in `x-thaw-call-id` for an idempotent worker.

Each delivery is one attempt (JetStream's `num_delivered`). The call's state is stored before the
message is settled, and settled by JetStream's own means: ack once final (succeeded, failed,
dead), nak with the backoff as delay to retry (gateway/async_policy.py decides). A redelivered
call whose stored state is already final is acked without running again: the gateway died
between storing and acking. While a call runs, in-progress acks keep it this gateway's.

Two kinds of message arrive (bus_schemas/subjects.py): calls the gateway accepted
(`infer.async.<fn>.accepted`, a trusted `Thaw-Call` header) and clients' claims
(`infer.async.<fn>`, their API key in `Authorization`), which are checked here: a bad key,
another tenant's function, an unfit body or Content-Type ends as a failed call naming why.
"""

import asyncio
import contextlib
import logging

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from bus_schemas import headers as H
from bus_schemas import streams
from bus_schemas.calls import FINAL, AsyncCall, CallRecord, CallStatus, DeadCall
from bus_schemas.functions import AsyncPolicy
from thaw_core.clock import now_ms

from gateway import errors
from gateway.async_policy import verdict
from gateway.auth import KeyCache
from gateway.call_store import CallStore, header_struct
from gateway.content_type import checked as content_type_checked
from gateway.content_type import fits as content_type_fits
from gateway.dispatcher import Dispatcher
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics
from gateway.specs import SpecCache

log = logging.getLogger(__name__)
SPEC = streams.GATEWAY_ASYNC


class Attempt:
    """One delivery's outcome: the status, the answer (or the error) and who said it."""

    __slots__ = ("status", "body", "content_type", "error", "from_worker")

    def __init__(self, status: int, body: bytes = b"", content_type: str = "", error: str = "",
                 from_worker: bool = False):
        self.status, self.body, self.content_type = status, body, content_type
        self.error, self.from_worker = error, from_worker


class AsyncCalls:
    def __init__(self, js: JetStreamContext, dispatcher: Dispatcher, keys: KeyCache, specs: SpecCache,
                 store: CallStore, metrics: GatewayMetrics, max_body_bytes: int, max_result_bytes: int,
                 max_in_flight: int = 64):
        self._js, self.d, self.keys, self.specs, self.store = js, dispatcher, keys, specs, store
        self.metrics, self.max_body_bytes, self.max_result_bytes = metrics, max_body_bytes, max_result_bytes
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> "AsyncCalls":
        config = ConsumerConfig(ack_wait=SPEC.ack_wait_s, max_deliver=SPEC.max_deliver,
                                max_ack_pending=SPEC.max_ack_pending)
        self._sub = await self._js.pull_subscribe(SPEC.filter_subject, durable=SPEC.durable, stream=SPEC.stream,
                                                  config=config)
        self._loop_task = asyncio.create_task(self._pull())
        return self

    async def stop(self) -> None:
        """Stop taking calls; those running are handed back at once (nak), not after ack_wait."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _pull(self) -> None:
        """Fetch as many calls as there are free places, never more: a fetched call's ack_wait runs."""
        while True:
            free = self.max_in_flight - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await self._sub.fetch(free, timeout=1.0)  # type: ignore[union-attr]  # set by start()
            except asyncio.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS reconnecting, say: try again shortly
                log.warning("fetching async calls failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg) -> None:
        keeper = asyncio.create_task(_keep_in_progress(msg, SPEC.ack_wait_s / 4))
        try:
            await self._run(msg)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()  # stopping: let another gateway (or our successor) take it now
            raise
        except Exception:
            last = msg.metadata.num_delivered >= SPEC.max_deliver
            log.exception("async call on %s failed in the gateway (delivery %d); %s", msg.subject,
                          msg.metadata.num_delivered, "giving up on it" if last else "it will be redelivered")
            with contextlib.suppress(Exception):
                # JetStream would stop delivering it after max_deliver but keep it in the queue
                await (msg.term() if last else msg.nak(delay=1.0))
        finally:
            keeper.cancel()

    async def _run(self, msg) -> None:
        attempt = msg.metadata.num_delivered
        call, refusal = await self._admit(msg)
        if call is None:
            log.warning("dropping an async message on %s: %s", msg.subject, refusal)
            await msg.term()
            return
        if refusal is not None:  # a claim refused: say why where its owner (if any) can read it
            await self._finish(call, attempt, "failed", Attempt(refusal.status, error=refusal.message))
            await msg.ack()
            return
        if await self._already_settled(call):
            await msg.ack()
            return
        spec = await self.specs.get(call.fn)
        policy = spec.async_ if spec is not None and spec.tenant == call.tenant else AsyncPolicy()
        started = now_ms()
        await self.store.put(_record(call, "running", attempt, started_ms=started))
        outcome = await self._attempt(call, msg.data or b"")
        self.metrics.count_call(call.fn, "async", outcome.status)
        judged = verdict(policy, attempt, outcome.status, outcome.from_worker)
        if judged.status == "retry":
            await self.store.put(_record(call, "queued", attempt, outcome, started_ms=started))
            await msg.nak(delay=judged.delay_s)
            return
        if judged.status == "dead":
            outcome.error = outcome.error or f"HTTP {outcome.status} from the worker"
            await self._bury(call, msg.data or b"", attempt, outcome)
        await self._finish(call, attempt, judged.status, outcome, started)
        await msg.ack()

    async def _admit(self, msg) -> tuple[AsyncCall | None, ApiError | None]:
        """The call a message carries and, for a claim, why it is refused (None: run it). No
        call at all: the message is junk that names nobody to tell."""
        tokens = msg.subject.split(".")
        if len(tokens) == 4 and tokens[3] == "accepted":
            call = header_struct(msg.headers, H.CALL, AsyncCall)
            if call is not None and not content_type_fits(call.content_type):  # only on an open bus
                return call, ApiError(400, "invalid_field", "Content-Type cannot go on a header line",
                                      field=H.CONTENT_TYPE)
            return call, None
        if len(tokens) != 3:
            return None, None
        return await self._claim(msg, tokens[2])

    async def _claim(self, msg, fn: str) -> tuple[AsyncCall, ApiError | None]:
        """A client's call: its id is `bus-<stream sequence>` (in its PubAck); its tenant is its
        key's, once the key checks out."""
        headers = msg.headers or {}
        meta = msg.metadata
        call = AsyncCall(call_id=f"bus-{meta.sequence.stream}", fn=fn, tenant="",
                         queued_ms=int(meta.timestamp.timestamp() * 1000))
        try:
            tenant = await self.keys.tenant(headers.get(H.AUTHORIZATION))
            call = AsyncCall(call_id=call.call_id, fn=fn, tenant=tenant, queued_ms=call.queued_ms,
                             content_type=content_type_checked(headers.get(H.CONTENT_TYPE), H.CONTENT_TYPE))
            spec = await self.specs.get(fn)
            if spec is None or spec.tenant != tenant:
                raise errors.unknown_function(fn)
            if len(msg.data or b"") > self.max_body_bytes:
                raise ApiError(413, "body_too_large", f"request body is over {self.max_body_bytes} bytes",
                               field="body")
        except ApiError as err:
            return call, err
        return call, None

    async def _already_settled(self, call: AsyncCall) -> bool:
        """True when this round of the call is over already (its state stored, the ack lost) or
        it was redriven since: then it must not run again. (A dead call is in the DLQ before its
        state says dead, so nothing is left to do for it either.)"""
        found = await self.store.get(call.call_id)
        if found is None:
            return False
        record, _ = found
        if record.redrives > call.redrives:
            return True
        if record.redrives < call.redrives or record.status not in FINAL:
            return False
        return True

    async def _attempt(self, call: AsyncCall, body: bytes) -> Attempt:
        try:
            reply = await self.d.invoke(call.tenant, call.fn, body, call.content_type,
                                        extra_headers=f"{H.WORKER_CALL_ID}: {call.call_id}\r\n")
            data = reply.body
            if reply.stream is not None:  # kept whole, like a bus reply
                data = b"".join([chunk async for chunk in reply.stream])
        except ApiError as err:
            return Attempt(err.status, error=err.message)
        except (ConnectionError, TimeoutError) as exc:
            return Attempt(502, error=f"the worker broke off its streamed answer ({exc})")
        if len(data) > self.max_result_bytes:
            return Attempt(reply.status, error=f"the answer ({len(data)} bytes) is over the {self.max_result_bytes} "
                           "bytes a result may keep", from_worker=True, content_type=reply.content_type)
        return Attempt(reply.status, data, reply.content_type, from_worker=True)

    async def _bury(self, call: AsyncCall, body: bytes, attempt: int, outcome: Attempt) -> None:
        dead = DeadCall(call_id=call.call_id, fn=call.fn, tenant=call.tenant, attempts=attempt,
                        http_status=outcome.status, reason=outcome.error, died_ms=now_ms())
        await self.store.bury(call, body, dead)

    async def _finish(self, call: AsyncCall, attempt: int, status: CallStatus, outcome: Attempt, started_ms: int = 0) -> None:
        result = outcome.body if status == "succeeded" or outcome.from_worker else b""
        await self.store.put(_record(call, status, attempt, outcome, started_ms=started_ms, finished=True), result)


def _record(call: AsyncCall, status: CallStatus, attempt: int, outcome: Attempt | None = None, started_ms: int = 0,
            finished: bool = False) -> CallRecord:
    now = now_ms()
    return CallRecord(call_id=call.call_id, fn=call.fn, tenant=call.tenant, status=status, attempts=attempt,
                      http_status=outcome.status if outcome else 0,
                      content_type=outcome.content_type if outcome else "", error=outcome.error if outcome else "",
                      queued_ms=call.queued_ms, started_ms=started_ms, finished_ms=now if finished else 0,
                      updated_ms=now, redrives=call.redrives)


async def _keep_in_progress(msg, every_s: float) -> None:
    """Tell JetStream the call is still being worked on, so ack_wait never hands it to another
    gateway while this one runs it (a slow worker may take request_timeout_s)."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(Exception):
            await msg.in_progress()
