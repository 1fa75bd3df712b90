"""A gateway's pool and a retired pod (a drained node's, replaced elsewhere: placement/drain.py):
no call gets its slots any more, and each goes back to the store, a free one at once and one in
a call when the call ends, so placement can stop the pod without cutting a call off."""

from gateway.pool import FnPool
from thaw_core.store.leases import Slot


async def no_pods(fn: str, want: int) -> None:
    return None


async def no_reason(fn: str) -> str:
    return ""


def a_pool(*slots: Slot) -> FnPool:
    pool = FnPool("echo", leases=None, holder="gw", ttl_ms=6000, ask_for_pods=no_pods, ask_every_s=1.0,
                  why_unplaceable=no_reason)
    for s in slots:
        pool.held[s.member] = s
        pool.checkin(s)
    return pool


def test_a_retired_pod_s_free_slots_go_back_at_once_and_its_busy_ones_when_their_calls_end():
    free_a, busy_a, free_b = Slot("a", "http://a", "gw:1"), Slot("a", "http://a", "gw:2"), Slot("b", "http://b", "gw:3")
    pool = a_pool(free_a, busy_a, free_b)
    assert pool.take() == free_a and pool.take() == busy_a  # two calls: one finishes, one still runs on pod a
    pool.checkin(free_a)
    pool.retire("a")
    assert pool.returning == [free_a] and list(pool.retiring) == ["gw:2"]
    assert pool.take() == free_b and pool.take() is None, "no call gets a retired pod's slot"
    pool.checkin(busy_a)  # its call ended
    assert pool.returning == [free_a, busy_a] and pool.retiring == {}
    assert pool.take() is None


def test_retiring_a_pod_the_pool_holds_nothing_of_changes_nothing():
    slot = Slot("b", "http://b", "gw:1")
    pool = a_pool(slot)
    pool.retire("a")
    assert (pool.returning, pool.retiring, pool.take()) == ([], {}, slot)
