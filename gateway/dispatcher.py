"""Invoke a function: find a slot (warm) or wait for a worker (cold), forward, give the slot back.

Both edges, HTTP and `infer.request.<fn>`, call `Dispatcher.invoke`, so they behave alike.
"""

import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import cast

from nats.js import JetStreamContext

from bus_schemas import subjects
from bus_schemas.functions import FunctionSpec, spec_digest
from bus_schemas.leases import LeaseRequested
from bus_schemas.pods import PodState, PodStateChanged
from thaw_core import bus, telemetry
from thaw_core.clock import now_ms
from thaw_core.pod_states import AnnouncedLeases, LatestSeq, PodStates
from thaw_core.store.functions import Functions
from thaw_core.store.leases import Slot
from thaw_core.store.start_failures import StartFailureLog, delay_s, wait_left_s

from gateway import errors
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics
from gateway.pool import FnPool
from gateway.settings import GatewaySettings
from gateway.specs import SpecCache
from gateway.upstream import Call, StreamedBody, Upstream, UpstreamBroken, UpstreamUnreachable

log = logging.getLogger(__name__)


# A worker's (status, content type, body), or why there was none.
Outcome = tuple[int, str, "bytes | StreamedBody"] | Exception


class Reply:
    """A worker's answer. (Plain slotted classes here and below: built on every call, and a frozen
    dataclass's __init__ costs several times as much.)"""

    __slots__ = ("status", "body", "content_type", "pod", "stream")

    def __init__(self, status: int, body: bytes, content_type: str, pod: str, stream: StreamedBody | None = None):
        self.status, self.body, self.content_type, self.pod = status, body, content_type, pod
        self.stream = stream  # set when the worker streams its answer


class Pending:
    """A warm call started by `Dispatcher.start_now`; `ctx` is the caller's, carried along."""

    __slots__ = ("fn", "pool", "slot", "call", "ctx", "_on_settled", "t0")

    def __init__(self, fn: str, pool: FnPool, slot: Slot, on_settled: Callable[["Pending"], None], ctx, t0: float):
        self.fn, self.pool, self.slot, self._on_settled, self.ctx = fn, pool, slot, on_settled, ctx
        self.call: Call | None = None
        self.t0 = t0

    def settled(self, call: Call) -> None:
        self._on_settled(self)


WARM, RESTORED, COLD = "warm", "restored", "cold"


class Dispatcher:
    def __init__(self, settings: GatewaySettings, js: JetStreamContext, r, specs: SpecCache, upstream: Upstream,
                 metrics: GatewayMetrics | None = None):
        self.s = settings
        self.metrics = metrics or GatewayMetrics()
        self._js, self._r, self._specs, self._upstream = js, r, specs, upstream
        self._leases = AnnouncedLeases(r, PodStates(r, js))
        self._functions = Functions(r)
        self._latest = LatestSeq()
        self.holder = f"gw-{socket.gethostname()}-{secrets.token_hex(3)}"
        self.pools: dict[str, FnPool] = {}
        self.start_failures = StartFailureLog(r)
        self._starting: dict[str, set[str]] = {}  # fn -> its pods seen pending, starting or restoring
        # How a pod is starting (restored, or cold: from scratch or after a failed restore) and
        # since when by its agent's clock; then when it came up by ours, to tell a call that
        # waited for a new pod from one served warm.
        self._start_of: dict[str, tuple[str, int]] = {}
        self._came_up: dict[str, tuple[str, float]] = {}

    def pool(self, fn: str) -> FnPool:
        pool = self.pools.get(fn)
        if pool is None:
            pool = self.pools[fn] = FnPool(fn, self._leases, self.holder, int(self.s.lease_ttl_s * 1000),
                                           self._ask_for_pods, self.s.lease_request_every_s, self._why_unplaceable,
                                           is_starting=lambda: fn in self._starting, retry_after=self._retry_after_s)
        return pool

    async def invoke(self, tenant: str, fn: str, body: bytes, content_type: str, path: str | None = None,
                     extra_headers: str = "") -> Reply:
        """Call a worker of `fn`. A streamed answer (Reply.stream) keeps its worker slot until the
        stream ends or is abandoned. `extra_headers`: "Name: value\\r\\n" lines for the worker
        (an async call's id)."""
        with telemetry.span("invoke", **{"thaw.fn": fn}) as current:
            reply = await self._invoke(tenant, fn, body, content_type, path, extra_headers)
            current.set_attribute("thaw.pod", reply.pod)
            current.set_attribute("http.response.status_code", reply.status)
            return reply

    async def _invoke(self, tenant: str, fn: str, body: bytes, content_type: str, path: str | None,
                      extra_headers: str) -> Reply:
        t0 = time.monotonic()
        spec = await self._specs.get(fn)
        if spec is None or spec.tenant != tenant:
            raise errors.unknown_function(fn)
        pool = self.pool(fn)
        for _ in range(3):
            slot = await pool.checkout(spec)
            outcome: Outcome
            try:
                outcome = await self._upstream.post(slot.endpoint, path or spec.invoke_path, body, content_type,
                                                    self.s.request_timeout_s, extra_headers)
            except (UpstreamUnreachable, UpstreamBroken, TimeoutError) as exc:
                outcome = exc
            except BaseException:
                pool.checkin(slot)
                raise
            reply = self._reply(fn, pool, slot, outcome)
            if reply is not None:
                self._observe(fn, reply, t0)
                return reply
        raise ApiError(502, "worker_unreachable", f"{fn}: workers kept failing to accept the call; retry later")

    def start_now(self, tenant: str, fn: str, body: bytes, content_type: str,
                  on_settled: Callable[[Pending], None], ctx=None) -> Pending | None:
        """Start a warm call without suspending, when all it needs is at hand: the function's spec
        cached, a free slot, an idle connection to that slot's worker. `on_settled(pending)` runs
        once the worker answered (or failed); then read it with `finish_now`. None: use `invoke`.
        (`ctx` rides along as `pending.ctx`, so callers need no closure per call.)"""
        spec = self._specs.peek(fn)
        pool = self.pools.get(fn)
        if spec is None or spec.tenant != tenant or pool is None:
            return None
        slot = pool.take()
        if slot is None:
            return None
        pending = Pending(fn, pool, slot, on_settled, ctx, time.monotonic())
        call = self._upstream.start(slot.endpoint, spec.invoke_path, body, content_type, self.s.request_timeout_s,
                                    callback=pending.settled)
        if call is None:
            pool.checkin(slot)
            return None
        pending.call = call
        return pending

    def finish_now(self, pending: Pending) -> Reply | None:
        """The reply of a settled call; None when the call never reached the worker (then `invoke`
        it). Raises ApiError like `invoke`."""
        call = pending.call
        assert call is not None, "a settled call"
        response = call.response
        if call.error is None and response is not None and response.stream is None:  # answered whole: the common case
            status, content_type, body = self._upstream.outcome(call)
            pending.pool.checkin(pending.slot)
            took_s = time.monotonic() - pending.t0
            self.metrics.observe_call(pending.fn, WARM, took_s, took_s)
            return Reply(status, cast(bytes, body), content_type, pending.slot.pod)
        outcome: Outcome
        try:
            outcome = self._upstream.outcome(call)
        except (UpstreamBroken, TimeoutError) as exc:
            outcome = exc
        if call.retryable:
            pending.pool.checkin(pending.slot)
            return None
        reply = self._reply(pending.fn, pending.pool, pending.slot, outcome)
        if reply is not None:
            self._observe(pending.fn, reply, pending.t0)
        return reply

    def _observe(self, fn: str, reply: Reply, t0: float) -> None:
        """Time a call answered: to its first answer, by what it waited for, and to its last byte."""
        now = time.monotonic()
        came_up = self._came_up.get(reply.pod)
        start = came_up[0] if came_up is not None and came_up[1] > t0 else WARM
        telemetry.annotate(**{"thaw.start": start})
        if reply.stream is None:
            self.metrics.observe_call(fn, start, now - t0, now - t0)
            return
        self.metrics.observe_call(fn, start, now - t0, None)
        reply.stream.on_close(lambda: self.metrics.observe_done(fn, time.monotonic() - t0))

    def _reply(self, fn: str, pool: FnPool, slot: Slot, outcome: "Outcome") -> Reply | None:
        """What a call's outcome means for the caller (None: retry on another worker). Gives the
        slot back, or, for a streamed answer, once the stream ends."""
        if isinstance(outcome, tuple):
            status, ctype, data = outcome
            if isinstance(data, StreamedBody):
                data.on_close(lambda: pool.checkin(slot))
                return Reply(status, b"", ctype, slot.pod, stream=data)
            pool.checkin(slot)
            return Reply(status, data, ctype, slot.pod)
        if isinstance(outcome, UpstreamUnreachable):
            # Not served (the worker is gone): drop its slots and try another worker.
            log.info("worker %s unreachable (%s); retrying on another", slot.pod, outcome)
            pool.drop(slot)
            self._upstream.forget(slot.endpoint)
            return None
        if isinstance(outcome, UpstreamBroken):
            pool.drop(slot)
            raise ApiError(502, "worker_failed", f"{fn}: the worker broke off the call ({outcome}); "
                                                 "it may have been processed, retry only if that is safe")
        pool.checkin(slot)
        raise ApiError(504, "worker_timeout", f"{fn}: the worker did not answer within {self.s.request_timeout_s:g}s")

    async def _ask_for_pods(self, fn: str, want_pods: int) -> None:
        msg = LeaseRequested(fn=fn, want_pods=want_pods, gateway=self.holder, at_ms=now_ms())
        # One id per gateway, function and second: a burst of retries is stored once.
        await bus.publish(self._js, subjects.lease_requested(fn), msg, msg_id=f"{self.holder}:{fn}:{msg.at_ms // 1000}")

    async def _why_unplaceable(self, fn: str) -> str:
        """Why `fn` may get no worker: its crash loop, or why placement cannot place it; "" if
        neither is known."""
        reasons = [await self._crash_loop(fn)]
        reason = await self._functions.unplaceable(fn, since_ms=now_ms() - 60_000)
        if reason:
            reasons.append(f"placement: {reason}")
        return "; ".join(r for r in reasons if r)

    async def _retry_after_s(self, spec: FunctionSpec) -> float:
        """A 503's Retry-After: when the function's crash-loop backoff lets its next pod start,
        if that is later than the usual retry."""
        left = wait_left_s(await self.start_failures.get(spec.name), spec_digest(spec), now_ms())
        return max(errors.RETRY_AFTER_S, left)

    async def _crash_loop(self, fn: str) -> str:
        record = await self.start_failures.get(fn)
        if record is None or record.failures < 2:
            return ""  # one failure is already the reason given
        return (f"{record.failures} starts in a row failed, so the next waits {delay_s(record.failures):g}s: "
                "fix the worker and deploy the function again")

    def on_pod_state(self, event: PodStateChanged) -> None:
        """Follow a pod's state: wake waiting calls when it is ready, end their wait when the
        last pod starting for them failed to start (a broken restore is not that: its pod is
        cold-started or replaced, and the calls keep waiting). An event older than one already
        seen for its pod (they come from several services) is dropped."""
        if not self._latest.fresh(event):
            return
        self.metrics.observe_pod_state(event.pod, event.state.value, event.at_ms)
        self._follow_start(event)
        starting = self._starting.setdefault(event.fn, set())
        if event.state in (PodState.PENDING, PodState.STARTING, PodState.RESTORING):
            starting.add(event.pod)
            return
        was_starting = event.pod in starting
        starting.discard(event.pod)
        if not starting:
            del self._starting[event.fn]
        pool = self.pools.get(event.fn)
        if pool is None:
            return
        if event.state == PodState.IDLE:
            pool.pod_ready()
        elif event.state == PodState.DRAINING:
            pool.retire(event.pod)
        elif event.start_failed and was_starting and not starting:
            pool.start_failed(event.pod, event.reason)

    def _follow_start(self, event: PodStateChanged) -> None:
        """Note how a pod starts and when it came up; a pod's start is timed once, from its agent
        beginning it to healthy (a restore that fell back to a cold start counts as cold, and
        its time includes the failed restore: what its callers waited)."""
        pod = event.pod
        if event.state in (PodState.STARTING, PodState.RESTORING):
            how = RESTORED if event.state == PodState.RESTORING else COLD
            began_ms = self._start_of.get(pod, (how, event.at_ms))[1]
            self._start_of[pod] = (how, began_ms)
        elif event.state == PodState.IDLE and pod in self._start_of and pod not in self._came_up:
            how, began_ms = self._start_of.pop(pod)
            self._came_up[pod] = (how, time.monotonic())
            self.metrics.observe_pod_start(event.fn, how, max(0, event.at_ms - began_ms) / 1000)
        elif event.state in (PodState.STOPPED, PodState.FAILED):
            self._start_of.pop(pod, None)
            self._came_up.pop(pod, None)

    async def renew_and_return(self) -> None:
        """Renew every held slot; give back slots idle for lease_hold_s. Runs every TTL/3."""
        now = now_ms()
        ttl_ms = int(self.s.lease_ttl_s * 1000)
        for pool in list(self.pools.values()):
            returning, pool.returning = pool.returning, []
            for slot_group in _by_pod(returning + pool.idle_slots_to_release(self.s.lease_hold_s)).items():
                pod, slots = slot_group
                await self._leases.release(pod, [s.member for s in slots], now)
            used, pool.used_since_renew = pool.used_since_renew, set()
            # a retired pod's slots in a call are renewed too: placement stops it once they are back
            for pod, slots in _by_pod([*pool.held.values(), *pool.retiring.values()]).items():
                lost = await self._leases.renew(pod, [s.member for s in slots], ttl_ms, now, pod in used)
                pool.forget(lost)

    async def release_all(self) -> None:
        now = now_ms()
        for pool in self.pools.values():
            for pod, slots in _by_pod([*pool.held.values(), *pool.retiring.values(), *pool.returning]).items():
                await self._leases.release(pod, [s.member for s in slots], now)
            pool.held.clear()
            pool.free.clear()
            pool.retiring.clear()
            pool.returning.clear()


def _by_pod(slots) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in slots:
        out.setdefault(s.pod, []).append(s)
    return out
