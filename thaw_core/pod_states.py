"""The one way a pod changes state: the store's compare-and-set, then its `pod.state` event.

Every service that moves a pod (placement, agents, gateways for busy/idle, the ledger for a
pod's end) does it through `PodStates`, which publishes the event of each transition the store
applied, with the pod's transition count (`seq`). Events of one pod come from several services
and so may arrive out of order; `LatestSeq` drops the ones a reader has already seen past.
"""

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
from nats.js import JetStreamContext

from bus_schemas import subjects
from bus_schemas.pods import PodState, PodStateChanged
from thaw_core import bus
from thaw_core.store.leases import Leases, Slot
from thaw_core.store.ledger import Ledger
from thaw_core.store.pods import Moved, Pods


class PodStates:
    def __init__(self, r: redis.Redis, js: JetStreamContext):
        self.pods, self.ledger, self._js = Pods(r), Ledger(r), js

    async def move(self, pod: str, to: PodState, now_ms: int, only_from: frozenset[PodState] | None = None,
                   **fields: str | int) -> Moved:
        """`Pods.move`, and the event when it applied (with the fields' `reason`/`endpoint`)."""
        moved = await self.pods.move(pod, to, now_ms, only_from, **fields)
        await self.announce(moved, reason=str(fields.get("reason", "")), endpoint=str(fields.get("endpoint", "")))
        return moved

    async def end(self, pod: str, final: PodState, reason: str, now_ms: int, start_failed: bool = False,
                  before_event: Callable[[Moved], Awaitable[None]] | None = None) -> bool:
        """Free what `pod` holds and make it `final` (stopped or failed). True when this call
        did it (a repeat is False and publishes nothing). `before_event` runs first when it did:
        what readers of the event must already find in the store."""
        moved = await self.ledger.release(pod, final, reason, now_ms)
        if moved.applied and before_event is not None:
            await before_event(moved)
        await self.announce(moved, reason=reason, start_failed=start_failed)
        return moved.applied

    async def announce(self, moved: Moved | None, reason: str = "", endpoint: str = "",
                       start_failed: bool = False) -> None:
        """The event of a transition the store applied (one a lease script made, say); nothing
        for one it did not."""
        if moved is None or not moved.applied or moved.seq <= 0:
            return
        msg = PodStateChanged(pod=moved.pod, fn=moved.fn, node=moved.node, state=moved.to, at_ms=moved.at_ms,
                              reason=reason, endpoint=endpoint or moved.endpoint, start_failed=start_failed,
                              seq=moved.seq)
        await bus.publish(self._js, subjects.pod_state(moved.pod), msg, msg_id=f"{moved.pod}:{moved.seq}")


class LatestSeq:
    """The newest `seq` seen per pod, for readers that must not go back in a pod's history."""

    def __init__(self, max_pods: int = 10_000):
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._max = max_pods

    def fresh(self, event: PodStateChanged) -> bool:
        """Whether `event` is newer than every event of its pod seen so far (and note it).
        An event without a seq (from before seqs) is taken as fresh."""
        last = self._seen.get(event.pod, 0)
        if event.seq and event.seq <= last:
            return False
        self._seen[event.pod] = max(last, event.seq)
        self._seen.move_to_end(event.pod)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True



class AnnouncedLeases:
    """`Leases` for a gateway: a pod's first slot makes it busy and its last one idle, and
    those transitions are published like any other."""

    def __init__(self, r: redis.Redis, states: PodStates):
        self._leases, self._states = Leases(r), states

    async def acquire(self, fn: str, want: int, holder: str, ttl_ms: int, now_ms: int) -> list[Slot]:
        leased = await self._leases.acquire(fn, want, holder, ttl_ms, now_ms)
        for moved in leased.became_busy:
            await self._states.announce(moved)
        return leased.slots

    async def renew(self, pod: str, members: list[str], ttl_ms: int, now_ms: int, used: bool) -> list[str]:
        return await self._leases.renew(pod, members, ttl_ms, now_ms, used)

    async def release(self, pod: str, members: list[str], now_ms: int) -> None:
        await self._states.announce(await self._leases.release(pod, members, now_ms))
