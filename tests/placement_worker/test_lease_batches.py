"""A burst of lease requests is placed as batches: decided one after another over the index,
committed in one round trip, and a commit the ledger refuses (another worker took the room
meanwhile) decided again on a fresh view. Whatever the interleaving, the ledger is exact."""

import asyncio

from bus_schemas.functions import FunctionSpec, Resources, Scaling
from bus_schemas.leases import LeaseRequested
from bus_schemas.nodes import GpuCapacity, NodeCapacity
from thaw_core.clock import now_ms
from thaw_core.store.client import connect_redis
from thaw_core.store.functions import Functions
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods

from placement.settings import PlacementSettings
from placement.worker import PlacementWorker

GPU_MIB = 24576
POD_MIB = 10000  # two fit a GPU


async def a_fleet(r, nodes: int = 3, gpus: int = 2) -> None:
    for n in range(nodes):
        caps = tuple(GpuCapacity(index=i, model="Mock-24G", vram_mib=GPU_MIB) for i in range(gpus))
        await Nodes(r).upsert_capacity(NodeCapacity(node=f"n{n}", cpu_milli=64000, memory_mib=1 << 20, gpus=caps))
        await Nodes(r).heartbeat(f"n{n}", now_ms())


async def deploy(r, fns: list[str], max_pods: int) -> None:
    for fn in fns:
        await Functions(r).put(FunctionSpec(name=fn, command=("x",), resources=Resources(vram_mib=POD_MIB),
                                            scaling=Scaling(max_pods=max_pods), placement_policy="best-fit"))


async def a_worker(redis_url, js, nats_server, r) -> PlacementWorker:
    worker = PlacementWorker(PlacementSettings(nats_url=nats_server.url, redis_url=redis_url), js, r)
    await worker.start()
    return worker


def burst(fns: list[str]) -> list[LeaseRequested]:
    return [LeaseRequested(fn=fn, want_pods=1, gateway="g", at_ms=now_ms()) for fn in fns]


async def test_a_burst_is_placed_in_batches_with_each_function_getting_one_pod(redis_url, js, nats_server, r):
    await a_fleet(r)
    fns = [f"fn{i}" for i in range(10)]
    await deploy(r, fns, max_pods=5)
    worker = await a_worker(redis_url, js, nats_server, r)
    # each function asked for twice in the burst: the second request finds the first's pod starting
    await asyncio.gather(*(worker.on_lease_requested(m, f"lease.requested.{m.fn}") for m in burst(fns + fns)))
    assert [len(await Pods(r).live(fn)) for fn in fns] == [1] * 10
    assert worker._lease_batches.batches < len(fns), "the burst went as a few batches, not a request each"
    reserved = sum(g.vram_reserved_mib for n in await Nodes(r).all() for g in n.gpus)
    assert reserved == 10 * POD_MIB


async def test_two_workers_bursts_for_the_same_room_never_over_commit(redis_url, js, nats_server):
    r1, r2 = connect_redis(redis_url), connect_redis(redis_url)
    try:
        await a_fleet(r1)
        fns = [f"race{i}" for i in range(20)]
        await deploy(r1, fns, max_pods=1)
        settings = PlacementSettings(nats_url=nats_server.url, redis_url=redis_url)
        a, b = PlacementWorker(settings, js, r1), PlacementWorker(settings, js, r2)
        await a.start()
        await b.start()
        # both see an empty fleet and decide the same GPUs: every commit of one of them conflicts
        await asyncio.gather(*(w.on_lease_requested(m, f"lease.requested.{m.fn}")
                               for w in (a, b) for m in burst(fns)))
        live = [len(await Pods(r1).live(fn)) for fn in fns]
        # 6 GPUs x 2 pods: exactly 12 of the 20 functions get their one pod, none gets two
        assert sum(live) == 12 and max(live) == 1
        for node in await Nodes(r1).all():
            for g in node.gpus:
                assert g.vram_reserved_mib == 2 * POD_MIB
    finally:
        await r1.aclose()
        await r2.aclose()


async def test_a_request_whose_other_pods_kept_conflicting_still_announces_the_pods_it_got(
        redis_url, js, nats_server, r):
    from bus_schemas import subjects
    from thaw_core.store.ledger import Ledger, Reservation

    await a_fleet(r, nodes=2, gpus=1)
    spec = FunctionSpec(name="pair", command=("x",), resources=Resources(vram_mib=20000),
                        scaling=Scaling(max_pods=5), placement_policy="best-fit")
    await Functions(r).put(spec)
    worker = PlacementWorker(PlacementSettings(nats_url=nats_server.url, redis_url=redis_url, commit_attempts=1),
                             js, r)
    await worker.start()  # its index: both GPUs free
    # another worker takes n0's GPU meanwhile: this worker's commit there conflicts, and with one
    # attempt it is not decided again
    taken = Reservation(pod="other-1", fn="other", node="n0", gpus=(0,), vram_mib=20000, gpu_milli=0,
                        cpu_milli=0, memory_mib=0, max_pods=5, concurrency=1)
    assert await Ledger(r).reserve(taken, now_ms()) == "ok"
    await worker.on_lease_requested(LeaseRequested(fn="pair", want_pods=2, gateway="g", at_ms=now_ms()),
                                    "lease.requested.pair")
    [pod] = await Pods(r).live("pair")
    assert pod.node == "n1"
    assigned = await js.get_last_msg("PLACEMENT", subjects.place_assigned("n1"))
    assert pod.pod.encode() in assigned.data, "the pod it got is sent to its node, not left pending"


async def test_nodes_only_this_worker_moved_are_not_read_again_and_one_another_moved_is(
        redis_url, js, nats_server, r):
    from thaw_core.store.ledger import Ledger, Reservation

    await a_fleet(r)
    fns = [f"own{i}" for i in range(6)]
    await deploy(r, fns, max_pods=1)
    worker = await a_worker(redis_url, js, nats_server, r)
    await asyncio.gather(*(worker.on_lease_requested(m, f"lease.requested.{m.fn}") for m in burst(fns[:3])))
    read = worker.live.nodes_read
    await worker.live.refresh()
    assert worker.live.nodes_read == read, "the ledger moved only by this worker's commits, which the index holds"

    # another worker commits on n2 between this worker's last read and its next commits
    other = Reservation(pod="other-1", fn="other", node="n2", gpus=(0,), vram_mib=POD_MIB, gpu_milli=0,
                        cpu_milli=0, memory_mib=0, max_pods=5, concurrency=1)
    assert await Ledger(r).reserve(other, now_ms()) == "ok"
    await asyncio.gather(*(worker.on_lease_requested(m, f"lease.requested.{m.fn}") for m in burst(fns[3:])))
    touched = {p.node for fn in fns for p in await Pods(r).live(fn)}
    await worker.live.refresh()
    assert worker.live.nodes_read == read + 1, f"only n2 is read again (this worker placed on {sorted(touched)})"
    index = await worker.live.current()
    for node in await Nodes(r).all():
        mine = index.node(node.name)
        assert [g.vram_used_mib for g in mine.gpus] == [g.vram_reserved_mib for g in node.gpus], node.name


async def test_a_batch_whose_unplaceable_reason_cannot_be_written_still_announces_the_pods_it_placed(
        redis_url, js, nats_server, r, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from bus_schemas import subjects

    await a_fleet(r, nodes=1, gpus=1)
    await deploy(r, ["fits"], max_pods=1)
    await Functions(r).put(FunctionSpec(name="huge", command=("x",), resources=Resources(vram_mib=GPU_MIB * 2),
                                        scaling=Scaling(max_pods=1), placement_policy="best-fit"))
    worker = await a_worker(redis_url, js, nats_server, r)

    async def store_gone(*args, **kwargs):  # the store drops between the commit and the reason
        raise RedisConnectionError("connection reset")
    monkeypatch.setattr(worker.functions, "record_unplaceable_many", store_gone)
    await asyncio.gather(*(worker.on_lease_requested(m, f"lease.requested.{m.fn}") for m in burst(["fits", "huge"])))
    [pod] = await Pods(r).live("fits")
    assigned = await js.get_last_msg("PLACEMENT", subjects.place_assigned("n0"))
    assert pod.pod.encode() in assigned.data, "the committed pod is sent to its node"
    assert await Pods(r).live("huge") == []
