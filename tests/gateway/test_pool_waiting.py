"""A call waiting for a worker gets the first slot that frees up, whatever the bus and the store
are going through meanwhile: a request for pods that is still being published (a JetStream
publish retries through a NATS failover for up to a minute) or a store error (Valkey failing
over) does not hold the wait up until the start deadline.

The pool's store side is stood in for here by `Answers`, which gives the lease answers a real
store would give over time; the failovers themselves are tests/fleet's."""

import asyncio

from bus_schemas.functions import FunctionSpec, Scaling
from gateway.pool import FnPool
from thaw_core.store.leases import Slot

SLOT = Slot("pod-a", "http://10.0.0.2:8000", "gw:1")
SPEC = FunctionSpec(name="echo", command=("x",), scaling=Scaling(start_timeout_s=10))


class Answers:
    """The store's answers to `acquire`, one per call (the last one repeats); an exception in
    the list is raised instead."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), 0

    async def acquire(self, fn, want, holder, ttl_ms, now):
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


class StuckAsk:
    """A request for pods whose publish has not returned yet."""

    def __init__(self):
        self.asked, self.released = asyncio.Event(), asyncio.Event()

    async def __call__(self, fn: str, pods: int) -> None:
        self.asked.set()
        await self.released.wait()


async def no_reason(fn: str) -> str:
    return ""


def a_pool(leases, ask) -> FnPool:
    return FnPool("echo", leases=leases, holder="gw", ttl_ms=6000, ask_for_pods=ask, ask_every_s=1.0,
                  why_unplaceable=no_reason)


async def test_a_slot_that_frees_up_reaches_the_waiting_call_while_the_ask_for_pods_is_still_publishing():
    ask = StuckAsk()
    pool = a_pool(Answers([], [], [SLOT]), ask)
    got = await asyncio.wait_for(pool.checkout(SPEC), 30)  # a hang guard; the old pool gave a 503 at 10 s
    assert got == SLOT
    assert ask.asked.is_set() and not ask.released.is_set(), "the ask was still publishing when the call got its slot"
    ask.released.set()


async def test_a_store_error_while_waiting_ends_no_wait():
    released = StuckAsk()
    released.released.set()
    leases = Answers(ConnectionError("store failing over"), [SLOT])
    got = await asyncio.wait_for(a_pool(leases, released).checkout(SPEC), 30)
    assert got == SLOT and leases.calls == 2


async def test_a_failed_ask_for_pods_is_asked_again_and_ends_no_wait():
    asks = []

    async def refused(fn: str, pods: int) -> None:
        asks.append(pods)
        raise TimeoutError("nats: timeout")

    pool = FnPool("echo", leases=Answers(*([[]] * 8), [SLOT]), holder="gw", ttl_ms=6000, ask_for_pods=refused,
                  ask_every_s=0.5, why_unplaceable=no_reason)
    got = await asyncio.wait_for(pool.checkout(SPEC), 30)
    assert got == SLOT and len(asks) >= 2, asks
