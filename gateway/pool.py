"""A gateway's slots for one function: lease once, serve many.

Calls check a slot out, use it, check it back in. Slots come from Redis in bulk (`Leases`)
only when calls wait; while none are free, the pool asks placement for more workers and wakes
when a pod of the function becomes ready. Waiting is bounded twice: by `max_queue` (429) and by
the function's start deadline (503), never forever; and it ends early, with a 503 that says
why, when the pods started for the waiting calls failed to start.
"""

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from bus_schemas.functions import FunctionSpec
from thaw_core.clock import now_ms
from thaw_core.pod_states import AnnouncedLeases
from thaw_core.store.leases import Slot

from gateway import errors

log = logging.getLogger(__name__)

VERDICT_GRACE_S = 3.0  # how long past the start deadline a call waits for a starting pod's verdict


class StartFailed(Exception):
    """The pod a waiting call counted on failed before it was ever ready."""

    def __init__(self, pod: str, reason: str):
        super().__init__(f"pod {pod} failed to start: {reason}")
        self.pod, self.reason = pod, reason


async def _within(fut: asyncio.Future, timeout_s: float):
    """What `fut` brings within timeout_s; raises TimeoutError if nothing came."""
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
    except TimeoutError:
        if fut.done() and not fut.cancelled():
            return fut.result()  # it came as the deadline passed: a slot (use it), or StartFailed
        raise


class FnPool:
    def __init__(self, fn: str, leases: AnnouncedLeases, holder: str, ttl_ms: int,
                 ask_for_pods: Callable[[str, int], Awaitable[None]], ask_every_s: float,
                 why_unplaceable: Callable[[str], Awaitable[str]], is_starting: Callable[[], bool] = lambda: False,
                 retry_after: Callable[[FunctionSpec], Awaitable[float]] | None = None):
        """`is_starting()`: whether a pod of the function is starting now (from pod.state events);
        `retry_after(spec)`: the Retry-After of a 503, in seconds (e.g. until a crash loop's
        backoff lets the next pod start)."""
        self.fn = fn
        self._retry_after = retry_after
        self._is_starting = is_starting
        self._leases, self._holder, self._ttl_ms = leases, holder, ttl_ms
        self._ask_for_pods, self._ask_every_s, self._why = ask_for_pods, ask_every_s, why_unplaceable
        self.held: dict[str, Slot] = {}  # member -> slot, every slot this gateway leases
        self.free: deque[Slot] = deque()
        # Slots of pods taken out of service (`retire`): those in a call until it ends, then
        # `returning`, which the gateway gives back to the store at its next renewal.
        self.retiring: dict[str, Slot] = {}
        self.returning: list[Slot] = []
        self.waiters: deque[asyncio.Future] = deque()
        self.used_since_renew: set[str] = set()  # pods whose slots served calls since last renewal
        self.last_used = time.monotonic()
        self._acquirer: asyncio.Task | None = None
        self._asking: asyncio.Task | None = None
        self._pod_ready = asyncio.Event()
        self._last_ask = 0.0

    @property
    def in_flight(self) -> int:
        return len(self.held) - len(self.free)

    def take(self) -> Slot | None:
        """A free slot, if there is one now."""
        while self.free:
            slot = self.free.popleft()
            if slot.member in self.held:
                return slot
        return None

    async def checkout(self, spec: FunctionSpec) -> Slot:
        """A slot to call a worker with. Raises ApiError 429 when the queue is full, 503 at the deadline."""
        slot = self.take()
        if slot is not None:
            return slot
        if len(self.waiters) >= spec.scaling.max_queue:
            raise errors.overloaded(self.fn, len(self.waiters))
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self._ensure_acquirer(spec)
        started = time.monotonic()
        try:
            return await self._wait(fut, spec.scaling.start_timeout_s)
        except StartFailed as exc:
            raise errors.no_worker(self.fn, time.monotonic() - started, await self._why_now(str(exc)),
                                   await self._retry_after_s(spec)) from None
        except TimeoutError:
            fut.cancel()
            raise errors.no_worker(self.fn, time.monotonic() - started, await self._why(self.fn),
                                   await self._retry_after_s(spec)) from None
        finally:
            if not fut.done():
                fut.cancel()

    async def _wait(self, fut: asyncio.Future, timeout_s: float) -> Slot:
        """What `fut` brings within timeout_s (a slot, or StartFailed). A pod still starting then
        gets up to VERDICT_GRACE_S more: its agent's start deadline began later than this wait,
        and its verdict says why far better than a bare timeout."""
        try:
            return await _within(fut, timeout_s)
        except TimeoutError:
            if not self._is_starting():
                raise
        return await _within(fut, VERDICT_GRACE_S)

    def checkin(self, slot: Slot) -> None:
        """Give a slot back: to the next waiter if any, else to the free list."""
        self.last_used = time.monotonic()
        self.used_since_renew.add(slot.pod)
        if slot.member not in self.held:
            if self.retiring.pop(slot.member, None) is not None:
                self.returning.append(slot)
            return  # lost at renewal (expired), dropped or retired: not ours to hand out
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self.free.append(slot)

    def drop(self, slot: Slot) -> None:
        """The worker behind `slot` is unreachable: forget every slot on that pod."""
        for member, s in list(self.held.items()):
            if s.pod == slot.pod:
                del self.held[member]

    def retire(self, pod: str) -> None:
        """`pod` is out of service (a drained node's, replaced elsewhere): no call gets its slots
        any more; those free are to be given back now, those in a call once it ends, so placement
        can stop the pod without cutting a call off."""
        free = {s.member for s in self.free if s.pod == pod}
        for member, s in list(self.held.items()):
            if s.pod == pod:
                del self.held[member]
                if member in free:
                    self.returning.append(s)
                else:
                    self.retiring[member] = s

    def pod_ready(self) -> None:
        self._pod_ready.set()

    def start_failed(self, pod: str, reason: str) -> None:
        """No pod is starting for the waiting calls any more and the last one failed: end their
        wait now with its reason, rather than at the start deadline."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(StartFailed(pod, reason))

    async def _retry_after_s(self, spec: FunctionSpec) -> float:
        return errors.RETRY_AFTER_S if self._retry_after is None else await self._retry_after(spec)

    async def _why_now(self, failed: str) -> str:
        """The failed start's reason, and the function's crash loop or placement trouble if any."""
        more = await self._why(self.fn)
        return f"{failed}; {more}" if more else failed

    def _ensure_acquirer(self, spec: FunctionSpec) -> None:
        if self._acquirer is None or self._acquirer.done():
            self._acquirer = asyncio.create_task(self._acquire_while_waiting(spec))

    def _waiting(self) -> int:
        while self.waiters and self.waiters[0].done():
            self.waiters.popleft()
        return sum(1 for w in self.waiters if not w.done())

    async def _acquire_while_waiting(self, spec: FunctionSpec) -> None:
        """Take slots for the waiting calls as pods become ready, and ask for pods now and then,
        until no call waits. The asking runs beside the taking: a publish that retries through a
        NATS failover (up to a minute) must not keep a call from a pod that is ready meanwhile.
        A store error ends no wait either: the calls' own deadlines do."""
        while (want := self._waiting()) > 0:
            self._pod_ready.clear()
            try:
                acquired = await self._leases.acquire(self.fn, want, self._holder, self._ttl_ms, now_ms())
            except Exception as exc:  # e.g. Valkey failing over: try again shortly
                log.warning("%s: could not take slots from the store (%s); retrying", self.fn, exc)
                acquired = []
            for slot in acquired:
                self.held[slot.member] = slot
                self.checkin(slot)
            if (still := self._waiting()) == 0:
                return
            if time.monotonic() - self._last_ask >= self._ask_every_s and (self._asking is None or self._asking.done()):
                self._last_ask = time.monotonic()
                self._asking = asyncio.create_task(self._ask(math.ceil(still / spec.scaling.concurrency)))
            try:
                await asyncio.wait_for(self._pod_ready.wait(), 0.25)
            except TimeoutError:
                pass

    async def _ask(self, pods: int) -> None:
        try:
            await self._ask_for_pods(self.fn, pods)
        except Exception as exc:  # the next round asks again
            log.warning("%s: could not ask placement for %d pod(s): %s", self.fn, pods, exc)

    def idle_slots_to_release(self, hold_s: float) -> list[Slot]:
        """Free slots to hand back when the pool has been idle for hold_s."""
        if self.waiters or time.monotonic() - self.last_used < hold_s:
            return []
        out = []
        while self.free:
            slot = self.free.popleft()
            if self.held.pop(slot.member, None) is not None:
                out.append(slot)
        return out

    def forget(self, members: list[str]) -> None:
        for m in members:
            self.held.pop(m, None)
            self.retiring.pop(m, None)
