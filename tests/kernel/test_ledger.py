"""The GPU ledger in real Redis: reserve and release are atomic, idempotent and never over-commit."""

import asyncio
from msgspec.structs import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus_schemas import redis_keys as K
from bus_schemas.nodes import GpuCapacity, NodeCapacity
from bus_schemas.pods import PodState
from thaw_core.store.ledger import Ledger, Reservation
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods

NODE = NodeCapacity(node="n1", cpu_milli=4000, memory_mib=8192,
                    gpus=(GpuCapacity(index=0, model="A", vram_mib=1000), GpuCapacity(index=1, model="A", vram_mib=1000)))


def res(pod: str, gpus=(0,), vram=400, milli=400, cpu=500, mem=1024, max_pods=100, fn="f") -> Reservation:
    return Reservation(pod=pod, fn=fn, node="n1", gpus=gpus, vram_mib=vram, gpu_milli=milli, cpu_milli=cpu,
                       memory_mib=mem, max_pods=max_pods, concurrency=1)


async def usage(r) -> dict:
    [node] = await Nodes(r).all()
    return {"cpu": node.cpu_reserved, "mem": node.memory_reserved,
            "vram": tuple(g.vram_reserved_mib for g in node.gpus), "milli": tuple(g.milli_reserved for g in node.gpus)}


async def test_reserve_then_release_restores_the_ledger_exactly(r):
    await Nodes(r).upsert_capacity(NODE)
    ledger = Ledger(r)
    before = await usage(r)
    assert await ledger.reserve(res("p1", gpus=(0, 1)), 1) == "ok"
    assert await usage(r) == {"cpu": 500, "mem": 1024, "vram": (400, 400), "milli": (400, 400)}
    released = await ledger.release("p1", PodState.STOPPED, "done", 2)
    assert (released.applied, released.to, released.seq, released.fn, released.node) == (True, "stopped", 2, "f", "n1")
    assert await usage(r) == before


async def test_release_is_safe_to_repeat(r):
    await Nodes(r).upsert_capacity(NODE)
    ledger = Ledger(r)
    await ledger.reserve(res("p1"), 1)
    assert (await ledger.release("p1", PodState.STOPPED, "done", 2)).applied is True
    assert (await ledger.release("p1", PodState.FAILED, "again", 3)).applied is False
    assert (await usage(r))["vram"] == (0, 0)
    assert await r.hget(K.pod("p1"), "state") == "stopped", "the first terminal state stands"


async def test_a_failed_pod_is_listed_with_its_reason_for_the_history_window_and_a_stopped_one_is_not(r):
    await Nodes(r).upsert_capacity(NODE)
    ledger = Ledger(r, history_s=60)
    for pod, gpu in (("p1", 0), ("p2", 0), ("p3", 1)):
        assert await ledger.reserve(res(pod, gpus=(gpu,)), 1) == "ok"
    await ledger.release("p1", PodState.FAILED, "worker exited", 1_000)
    await ledger.release("p1", PodState.FAILED, "again", 2_000)  # a repeat lists it once, as it was
    await ledger.release("p2", PodState.STOPPED, "idle", 2_000)
    failed = await Pods(r).recent_failures(since_ms=0)
    assert [(p.pod, p.state, p.reason, p.state_at_ms) for p in failed] == [("p1", "failed", "worker exited", 1_000)]
    await ledger.release("p3", PodState.FAILED, "oom", 70_000)  # 69 s later: p1 is out of the window
    assert [p.pod for p in await Pods(r).recent_failures(since_ms=0)] == ["p3"]


async def test_a_repeated_reserve_changes_nothing(r):
    await Nodes(r).upsert_capacity(NODE)
    ledger = Ledger(r)
    assert await ledger.reserve(res("p1"), 1) == "ok"
    assert await ledger.reserve(res("p1"), 1) == "exists"
    assert (await usage(r))["vram"] == (400, 0)


async def test_reservations_that_would_over_commit_are_refused_with_the_reason(r):
    await Nodes(r).upsert_capacity(NODE)
    ledger = Ledger(r)
    assert await ledger.reserve(res("p1", vram=800), 1) == "ok"
    cases = [
        (res("p2", vram=300), "gpu_vram"),
        (res("p3", vram=100, milli=700), "gpu_milli"),
        (res("p4", gpus=(1,), cpu=3600), "cpu"),
        (res("p5", gpus=(1,), mem=8000), "memory"),
        (res("p6", gpus=(7,)), "no_gpu"),
        (res("p7", max_pods=1), "max_pods"),
    ]
    for reservation, reason in cases:
        assert await ledger.reserve(reservation, 1) == reason, reservation
    assert await usage(r) == {"cpu": 500, "mem": 1024, "vram": (800, 0), "milli": (400, 0)}


async def check_invariants(r) -> None:
    [node] = await Nodes(r).all()
    assert 0 <= node.cpu_reserved <= node.cpu_milli
    assert 0 <= node.memory_reserved <= node.memory_mib
    for g in node.gpus:
        assert 0 <= g.vram_reserved_mib <= g.vram_mib
        assert 0 <= g.milli_reserved <= 1000
    held = [await r.hgetall(k) async for k in r.scan_iter(K.reservation("*"))]
    for i, g in enumerate(node.gpus):
        assert g.vram_reserved_mib == sum(int(h["vram_mib"]) for h in held if str(i) in h["gpus"].split(","))


ops = st.lists(st.tuples(st.sampled_from(["reserve", "release", "crash-retry"]), st.integers(0, 7),
                         st.sampled_from([(0,), (1,), (0, 1)]), st.integers(1, 700), st.integers(1, 600)),
               max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
async def test_no_sequence_of_reserve_release_and_crash_over_commits(r, steps):
    await r.flushall()
    await Nodes(r).upsert_capacity(NODE)
    ledger = Ledger(r)
    for op, pod, gpus, vram, milli in steps:
        reservation = res(f"p{pod}", gpus=gpus, vram=vram, milli=milli, cpu=300, mem=500)
        if op == "reserve":
            await ledger.reserve(reservation, 1)
        elif op == "release":
            await ledger.release(f"p{pod}", PodState.STOPPED, "", 2)
        else:  # a component died after its step and a successor repeats it
            await ledger.reserve(reservation, 1)
            await ledger.reserve(reservation, 1)
            await ledger.release(f"p{pod}", PodState.FAILED, "", 2)
            await ledger.release(f"p{pod}", PodState.FAILED, "", 2)
        await check_invariants(r)
    for pod in range(8):
        await ledger.release(f"p{pod}", PodState.STOPPED, "", 3)
    assert await usage(r) == {"cpu": 0, "mem": 0, "vram": (0, 0), "milli": (0, 0)}


async def test_concurrent_committers_on_separate_connections_never_over_commit(redis_url):
    from thaw_core.store.client import connect_redis

    clients = [connect_redis(redis_url) for _ in range(8)]
    try:
        await Nodes(clients[0]).upsert_capacity(NODE)

        async def committer(i: int, r) -> int:
            ledger = Ledger(r)
            won = 0
            for j in range(30):
                won += await ledger.reserve(res(f"w{i}-{j}", gpus=(j % 2,), vram=90, milli=90, cpu=10, mem=10), 1) == "ok"
            return won

        won = await asyncio.gather(*(committer(i, c) for i, c in enumerate(clients)))
        # 1000 MiB / 90 per pod: 11 fit on each GPU (990 MiB); every other commit must be refused.
        assert sum(won) == 22
        await check_invariants(clients[0])
    finally:
        for c in clients:
            await c.aclose()


async def test_a_tenant_quota_caps_pods_and_vram_and_release_gives_them_back(r):
    from thaw_core.store.quotas import Quotas

    await Nodes(r).upsert_capacity(NODE)
    ledger, quotas = Ledger(r), Quotas(r)
    await quotas.set("acme", max_pods=2, max_vram_mib=1000)
    assert await ledger.reserve(replace(res("p1", gpus=(0, 1), vram=300), tenant="acme"), 1) == "ok"
    assert await ledger.reserve(replace(res("p2", vram=500), tenant="acme"), 1) == "quota_vram"
    assert await ledger.reserve(replace(res("p2", vram=400), tenant="acme"), 1) == "ok"
    assert await ledger.reserve(replace(res("p3", vram=1), tenant="acme"), 1) == "quota_pods"
    assert await ledger.reserve(res("other-tenant", gpus=(1,), vram=400), 1) == "ok", "another tenant has its own"
    q = await quotas.get("acme")
    assert (q.pods, q.vram_mib) == (2, 1000)
    for _ in range(2):  # release is idempotent, and so is the usage it gives back
        await ledger.release("p1", PodState.STOPPED, "done", 2)
    q = await quotas.get("acme")
    assert (q.pods, q.vram_mib) == (1, 400)
    assert await ledger.reserve(replace(res("p3", vram=1), tenant="acme"), 1) == "ok"
    assert "2 of 2 pods" in await quotas.describe("acme")
