"""Worker leases in real Redis: concurrency is a hard limit, and a lease never outlives its TTL."""

from bus_schemas import redis_keys as K
from bus_schemas.pods import PodState
from thaw_core.store.leases import Leases


async def serving_pod(r, pod="p1", fn="f", concurrency=4, state="idle"):
    await r.hset(K.pod(pod), mapping={"fn": fn, "state": state, "concurrency": concurrency,
                                      "endpoint": f"http://x/{pod}", "last_used_ms": 0})
    await r.sadd(K.function_pods(fn), pod)


async def test_a_worker_is_never_leased_beyond_its_concurrency(r):
    await serving_pod(r, "p1", concurrency=4)
    await serving_pod(r, "p2", concurrency=4)
    leases = Leases(r)
    got = await leases.acquire("f", 100, "gw-a", 5000, 1000)
    assert len(got.slots) == 8
    assert (await leases.acquire("f", 1, "gw-b", 5000, 1000)).slots == []
    assert {s.pod for s in got.slots} == {"p1", "p2"}
    assert await r.hget(K.pod("p1"), "state") == "busy"


async def test_a_pods_first_slot_makes_it_busy_once_and_says_so(r):
    await serving_pod(r, "p1", concurrency=2)
    leases = Leases(r)
    first = await leases.acquire("f", 1, "gw-a", 5000, 1000)
    [busy] = first.became_busy
    assert (busy.pod, busy.to, busy.found, busy.seq, busy.fn, busy.endpoint) == \
        ("p1", PodState.BUSY, "idle", 1, "f", "http://x/p1"), "a serving pod's events say where it serves"
    second = await leases.acquire("f", 1, "gw-b", 5000, 1000)
    assert len(second.slots) == 1 and second.became_busy == [], "already busy: no transition"


async def test_an_expired_lease_frees_its_slot_and_the_pod_returns_to_idle(r):
    await serving_pod(r, "p1", concurrency=1)
    leases = Leases(r)
    [slot] = (await leases.acquire("f", 1, "gw-dead", ttl_ms=2000, now_ms=1000)).slots
    assert (await leases.acquire("f", 1, "gw-b", 2000, now_ms=2999)).slots == []
    idle = await leases.sweep("p1", now_ms=3001)
    assert (idle.to, idle.seq) == (PodState.IDLE, 2)
    assert await leases.sweep("p1", now_ms=3002) is None, "idle already"
    assert await r.hget(K.pod("p1"), "state") == "idle"
    [again] = (await leases.acquire("f", 1, "gw-b", 2000, now_ms=3001)).slots
    assert again.member != slot.member


async def test_renewal_extends_live_slots_and_reports_lost_ones(r):
    await serving_pod(r, "p1", concurrency=2)
    leases = Leases(r)
    a, b = (await leases.acquire("f", 2, "gw", ttl_ms=1000, now_ms=0)).slots
    assert await leases.renew("p1", [a.member], ttl_ms=1000, now_ms=900, used=True) == []
    lost = await leases.renew("p1", [a.member, b.member], ttl_ms=1000, now_ms=1500, used=False)
    assert lost == [b.member]
    assert await r.hget(K.pod("p1"), "last_used_ms") == "900"


async def test_releasing_the_last_slot_makes_the_pod_idle_and_stamps_last_use(r):
    await serving_pod(r, "p1", concurrency=2)
    leases = Leases(r)
    a, b = (await leases.acquire("f", 2, "gw", 5000, 0)).slots
    assert await leases.release("p1", [a.member], 10) is None
    assert await r.hget(K.pod("p1"), "state") == "busy"
    idle = await leases.release("p1", [b.member], 20)
    assert (idle.to, idle.seq, idle.at_ms, idle.endpoint) == (PodState.IDLE, 2, 20, "http://x/p1")
    assert await r.hmget(K.pod("p1"), "state", "last_used_ms") == ["idle", "20"]


async def test_only_an_unleased_pod_unused_since_the_cutoff_starts_draining(r):
    await serving_pod(r, "p1", concurrency=1)
    leases = Leases(r)
    [slot] = (await leases.acquire("f", 1, "gw", 5000, now_ms=100)).slots
    assert not (await leases.begin_drain("p1", unused_since_ms=200, now_ms=300, reason="idle")).applied
    await leases.release("p1", [slot.member], now_ms=300)
    assert not (await leases.begin_drain("p1", unused_since_ms=200, now_ms=400, reason="idle")).applied, "used at 300"
    drained = await leases.begin_drain("p1", unused_since_ms=300, now_ms=400, reason="idle")
    assert (drained.applied, drained.found, drained.seq) == (True, "idle", 3)
    assert await r.hget(K.pod("p1"), "state") == "draining"
    assert (await leases.acquire("f", 1, "gw", 5000, 500)).slots == [], "a draining pod is never leased"
