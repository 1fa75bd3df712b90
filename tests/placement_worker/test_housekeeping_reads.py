"""Housekeeping reads a large deployment a slice a round (placement/spec_cache.py, pod_cache.py),
and a lease request reads the store before it takes the placement lock (placement/recent_pods.py);
neither may change what is placed. Real Redis and NATS where the store is involved."""

import asyncio

from bus_schemas.functions import FunctionSpec, Resources, Scaling
from bus_schemas.leases import LeaseRequested
from bus_schemas.nodes import GpuCapacity, NodeCapacity
from bus_schemas.pods import PodState
from placement.pod_cache import PodCache
from placement.recent_pods import RecentPods
from placement.rotation import Rotation
from placement.settings import PlacementSettings
from placement.spec_cache import SpecCache
from placement.worker import PlacementWorker
from thaw_core.clock import now_ms
from thaw_core.store.functions import Functions
from thaw_core.store.ledger import Ledger, Reservation
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import PodRecord, Pods


def a_function(name: str, min_pods: int = 0, max_pods: int = 100) -> FunctionSpec:
    return FunctionSpec(name=name, command=("x",), scaling=Scaling(min_pods=min_pods, max_pods=max_pods),
                        resources=Resources(vram_mib=1000, cpu_milli=100, memory_mib=64))


def test_a_rotation_comes_round_to_every_entry_in_turn():
    turns = Rotation(per_round=2)
    entries = ["a", "b", "c"]
    assert [turns.due(entries) for _ in range(3)] == [["a", "b"], ["c", "a"], ["b", "c"]]
    assert turns.due(entries, taken=2) == [], "reads spent on new entries leave no room"
    assert Rotation(per_round=5).due(entries) == entries


async def test_specs_are_read_a_slice_a_round_and_a_new_or_deleted_function_is_seen_within_a_turn(r):
    functions = Functions(r)
    for i in range(5):
        await functions.put(a_function(f"f{i}"))
    cache = SpecCache(functions, per_round=2)
    assert set(await cache.current()) == {f"f{i}" for i in range(5)}, "the first round reads them all"
    await functions.put(a_function("f0", min_pods=3))  # a redeploy
    await functions.delete("f4")
    await functions.put(a_function("new"))
    rounds = [await cache.current() for _ in range(4)]  # one turn: 5 specs, 2 a round, then the names
    assert rounds[-1]["f0"].scaling.min_pods == 3
    assert "f4" not in rounds[-1] and "new" in rounds[-1]


async def test_a_function_with_live_pods_is_read_at_once_so_its_pods_are_never_taken_for_a_deleted_ones(r):
    functions = Functions(r)
    for i in range(4):
        await functions.put(a_function(f"f{i}"))
    cache = SpecCache(functions, per_round=2)
    await cache.current()
    await cache.current()  # mid-turn: the names are not read again this round
    await functions.put(a_function("late"))
    assert "late" in await cache.current(with_pods={"late"})
    assert "gone" not in await cache.current(with_pods={"gone"})


async def test_pods_are_read_a_slice_a_round_and_a_pod_that_ended_or_began_is_seen_at_once(r):
    await Nodes(r).upsert_capacity(NodeCapacity(node="n0", cpu_milli=64000, memory_mib=1 << 20,
                                                gpus=(GpuCapacity(index=0, model="M", vram_mib=24576),)))
    ledger, pods = Ledger(r), Pods(r)

    async def reserve(pod: str) -> None:
        assert await ledger.reserve(Reservation(pod=pod, fn="f", node="n0", gpus=(0,), vram_mib=100, gpu_milli=0,
                                                cpu_milli=100, memory_mib=64, max_pods=100, concurrency=1),
                                    now_ms()) == "ok"
    for i in range(4):
        await reserve(f"p{i}")
    cache = PodCache(pods, per_round=2)
    assert [p.pod for p in await cache.current()] == ["p0", "p1", "p2", "p3"]
    await pods.move("p3", PodState.STARTING, now_ms())
    await ledger.release("p0", PodState.STOPPED, "test", now_ms())
    await reserve("p4")
    read_before = cache.read
    current = {p.pod: p for p in await cache.current()}
    assert set(current) == {"p1", "p2", "p3", "p4"}
    assert cache.read - read_before == 2, "the new pod and one in turn, not every pod"
    await cache.current()
    assert {p.pod: p for p in await cache.current()}["p3"].state == PodState.STARTING, "a change within a turn"


def test_a_read_that_began_before_a_commit_gets_the_commit_back_once():
    recent = RecentPods()
    mark = recent.open_read()
    recent.committed("f-1", "f", "n0", at_ms=1)
    recent.committed("g-1", "g", "n0", at_ms=1)
    later = recent.open_read()
    recent.committed("f-2", "f", "n0", at_ms=2)
    read = [PodRecord(pod="f-1", fn="f", state=PodState.PENDING)]  # the read already found f-1
    assert [p.pod for p in recent.since(mark, "f", read)] == ["f-1", "f-2"]
    assert [p.pod for p in recent.since(later, "f", [])] == ["f-2"]
    recent.close_read(mark)
    recent.close_read(later)
    assert recent.since(0, "f", []) == [], "nothing is kept once no read is open"


async def test_a_burst_of_lease_requests_for_one_function_starts_only_the_pods_it_needs(r, js, nats_server, redis_url):
    """The requests read the store side by side, before the lock: the pods committed meanwhile
    by this worker still count, as when each read under the lock."""
    for n in ("n0", "n1"):
        await Nodes(r).upsert_capacity(NodeCapacity(node=n, cpu_milli=64000, memory_mib=1 << 20,
                                                    gpus=(GpuCapacity(index=0, model="M", vram_mib=24576),)))
        await Nodes(r).heartbeat(n, now_ms())
    await Functions(r).put(a_function("burst"))
    worker = PlacementWorker(PlacementSettings(nats_url=nats_server.url, redis_url=redis_url), js, r)
    await worker.start()
    requests = [LeaseRequested(fn="burst", want_pods=1, gateway="g", at_ms=now_ms()) for _ in range(8)]
    await asyncio.gather(*(worker.on_lease_requested(m, "lease.requested.burst") for m in requests))
    assert len(await Pods(r).live("burst")) == 1, "one starting pod answers every request for one"
