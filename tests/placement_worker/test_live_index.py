"""Placement as benchmarked (issue 11): each worker decides over one long-lived capacity index
kept current from the bus and the store, against a workload learned from the pods the
platform asked for, persisted and shared by the workers. Real NATS and Redis throughout."""

from bus_schemas import streams, subjects
from bus_schemas.functions import FunctionSpec, Resources, Scaling
from bus_schemas.nodes import GpuCapacity, NodeCapacity
from bus_schemas.pods import PodState
from placement.capacity_view import live_views
from placement.engine import CapacityIndex, PodRequest, decide
from placement.learned_workload import LearnedWorkload
from placement.requests import pod_request
from placement.service import attach
from placement.settings import PlacementSettings
from placement.worker import PlacementWorker
from tests.conftest import eventually
from thaw_core import bus, subscriber
from thaw_core.clock import now_ms
from thaw_core.store.client import connect_redis
from thaw_core.store.functions import Functions
from thaw_core.store.ledger import Ledger
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods
from thaw_core.store.workload import Shape, ShapeCount, WorkloadCounts

HOUR_MS = 3600 * 1000


def a_node(name: str, gpus: int = 2, vram_mib: int = 24576) -> NodeCapacity:
    return NodeCapacity(node=name, cpu_milli=64000, memory_mib=1 << 20, at_ms=now_ms(),
                        gpus=tuple(GpuCapacity(index=i, model="Mock-24G", vram_mib=vram_mib) for i in range(gpus)))


def a_function(name: str, vram_mib: int = 10000, policy: str = "thaw") -> FunctionSpec:
    return FunctionSpec(name=name, command=("x",), placement_policy=policy, scaling=Scaling(max_pods=100),
                        resources=Resources(vram_mib=vram_mib, cpu_milli=100, memory_mib=64))


def settings(nats_server, redis_url, name: str = "placement") -> PlacementSettings:
    return PlacementSettings(nats_url=nats_server.url, redis_url=redis_url, name=name)


async def fresh_decision(worker: PlacementWorker, spec: FunctionSpec):
    """What an index built from the store right now decides, with the worker's workload."""
    index = await worker.live.current()
    fresh = CapacityIndex(live_views(await worker.nodes.all(), now_ms(), worker.s.node_timeout_s),
                          workload=index.workload)
    assert fresh.nodes() == index.nodes()
    return decide(fresh, pod_request(spec), spec.placement_policy)


def shapes(index: CapacityIndex) -> list[tuple[int, float]]:
    """(milli per GPU, weight) of each shape of the index's workload profile."""
    assert index.workload is not None
    return sorted((p.gpu_milli, round(p.weight, 3)) for p in index.workload.pods)


async def test_a_refresh_reads_in_full_only_the_nodes_whose_ledger_or_capacity_moved(r, js, nats_server, redis_url):
    worker = PlacementWorker(settings(nats_server, redis_url), js, r)
    for n in ("n0", "n1", "n2"):
        await worker.on_capacity(a_node(n), subjects.node_capacity(n))
    spec = a_function("small", 6000)
    await Functions(r).put(spec)
    assert await worker.place_one(spec)
    await worker.live.refresh()
    read = worker.live.nodes_read
    await worker.live.refresh()
    assert worker.live.nodes_read == read, "nothing moved: no node read again"
    [pod] = await Pods(r).live("small")
    assert (await Ledger(r).release(pod.pod, PodState.STOPPED, "test", now_ms())).applied
    await worker.live.refresh()
    assert worker.live.nodes_read == read + 1, "the release moved one node"
    assert decide(await worker.live.current(), pod_request(spec), "thaw") == await fresh_decision(worker, spec)
    await Nodes(r).upsert_capacity(a_node("n1", gpus=1))  # n1 lost a GPU: a new fleet
    builds = worker.live.builds
    await worker.live.refresh()
    assert worker.live.nodes_read == read + 2 and worker.live.builds == builds + 1
    assert decide(await worker.live.current(), pod_request(spec), "thaw") == await fresh_decision(worker, spec)


async def test_the_index_is_built_once_and_decides_as_a_fresh_one_would(r, js, nats_server, redis_url):
    worker = PlacementWorker(settings(nats_server, redis_url), js, r)
    for n in ("n0", "n1"):
        await worker.on_capacity(a_node(n), subjects.node_capacity(n))
    assert worker.live.builds == 2  # one index per fleet: n0, then n0 and n1
    small, big = a_function("small", 6000), a_function("big", 20000)
    for spec in (small, big):
        await Functions(r).put(spec)
    for spec in (small, big, small, small):
        index = await worker.live.current()
        assert decide(index, pod_request(spec), "thaw") == await fresh_decision(worker, spec)
        assert await worker.place_one(spec)
    # an agent stops a pod: its release reaches the index at the next housekeeping round
    stopped = (await Pods(r).live("small"))[0].pod
    assert (await Ledger(r).release(stopped, PodState.STOPPED, "test", now_ms())).applied
    await worker.housekeeping()
    assert decide(await worker.live.current(), pod_request(big), "thaw") == await fresh_decision(worker, big)
    # a node reporting the same capacity again changes nothing; a new node changes the fleet
    await worker.on_capacity(a_node("n0"), subjects.node_capacity("n0"))
    assert worker.live.builds == 2, "four decisions, one fleet: the index is not rebuilt per decision"
    await worker.on_capacity(a_node("n2"), subjects.node_capacity("n2"))
    assert worker.live.builds == 3
    assert await worker.place_one(big)
    assert decide(await worker.live.current(), pod_request(big), "thaw") == await fresh_decision(worker, big)
    assert worker.live.builds == 3


async def test_a_stale_index_conflicts_once_refreshes_and_places(redis_url, js, nats_server):
    ra, rb = connect_redis(redis_url), connect_redis(redis_url)
    try:
        a = PlacementWorker(settings(nats_server, redis_url, "a"), js, ra)
        b = PlacementWorker(settings(nats_server, redis_url, "b"), js, rb)
        for n in ("n0", "n1"):
            await a.on_capacity(a_node(n, gpus=1), subjects.node_capacity(n))
        spec = a_function("whole", 20000, policy="best-fit")  # one per GPU
        await Functions(ra).put(spec)
        await a.live.current()
        built = a.live.builds
        assert await b.place_one(spec)  # b takes n0's GPU; a's index still has it free
        refreshes = a.live.refreshes
        assert await a.place_one(spec)
        assert a.live.refreshes == refreshes + 1, "one conflict, one refresh"
        assert a.live.builds == built
        assert sorted(p.node for p in await Pods(ra).live("whole")) == ["n0", "n1"]
        assert (await a.live.current()).nodes() == (await b.live.refresh()).nodes()
    finally:
        await ra.aclose()
        await rb.aclose()


async def test_the_learned_workload_counts_what_was_placed_and_a_new_worker_reads_it(r, js, nats_server,
                                                                                      redis_url):
    first = PlacementWorker(settings(nats_server, redis_url), js, r)
    await first.on_capacity(a_node("n0", gpus=4), subjects.node_capacity("n0"))
    small, big = a_function("small", 6000), a_function("big", 20000)
    for spec in (small, big):
        await Functions(r).put(spec)
    for spec in (small, small, big):
        assert await first.place_one(spec)
    counts = first.workload.counts(now_ms())
    assert round(counts[pod_request(small)], 3) == 2 and round(counts[pod_request(big)], 3) == 1
    assert (await first.live.current()).workload is None, "not synced yet: the index learns from its own"
    await first.sync_workload()
    # the policy's profile: each share in the milli it takes of the fleet's 24 GiB GPUs
    assert shapes(await first.live.current()) == [(245, 0.667), (814, 0.333)]

    restarted = PlacementWorker(settings(nats_server, redis_url), js, r)
    await restarted.start()
    assert shapes(await restarted.live.current()) == [(245, 0.667), (814, 0.333)]
    later = now_ms() + HOUR_MS  # an hour away: every count halved
    assert {k: round(v, 3) for k, v in restarted.workload.counts(later).items()} == {
        pod_request(small): 1.0, pod_request(big): 0.5}


async def test_stored_counts_halve_in_a_half_life_and_merge_every_worker_s(r):
    store, t0 = WorkloadCounts(r), 1_000_000
    small = Shape(fn="small", cpu_milli=100, memory_mib=64, gpu_count=1, vram_mib=6000)
    big = Shape(fn="big", cpu_milli=100, memory_mib=64, gpu_count=1, vram_mib=20000)
    await store.add([ShapeCount(shape=small, count=4.0, at_ms=t0)], t0, half_life_s=3600)
    table = await store.add([ShapeCount(shape=big, count=1.0, at_ms=0)], t0 + HOUR_MS, half_life_s=3600)
    assert {c.shape.fn: (round(c.count, 6), c.at_ms) for c in table} == {
        "small": (2.0, t0 + HOUR_MS), "big": (1.0, t0 + HOUR_MS)}
    # a worker loading the table later decays it by the time since, from the timestamps alone
    learned = LearnedWorkload(half_life_s=3600)
    learned.replace(await store.load())
    assert sorted(round(v, 6) for v in learned.counts(t0 + 2 * HOUR_MS).values()) == [0.5, 1.0]
    # seven half-lives later a shape nobody asks for is forgotten
    assert await store.add([], t0 + 9 * HOUR_MS, half_life_s=3600) == []


async def test_every_worker_hears_every_node_through_its_own_durable(r, js, nats_server, redis_url):
    workers, brokers = [], []
    try:
        for name in ("placement-a", "placement-b"):
            worker = PlacementWorker(settings(nats_server, redis_url, name), js, r)
            broker, nc = await subscriber.connect(nats_server.url, name)
            attach(broker, worker, name)
            await broker.start()
            workers.append(worker)
            brokers.append((broker, nc))
        for n in ("n0", "n1", "n2"):
            await bus.publish(js, subjects.node_capacity(n), a_node(n), msg_id=f"cap:{n}")
        for worker in workers:
            await eventually(lambda w=worker: all(w.live.holds(a_node(n)) for n in ("n0", "n1", "n2")),
                             what=f"{worker.s.name}'s index to hold every node")
        # a worker that is gone (a replaced pod) leaves no durable behind for long
        info = await js.consumer_info("NODES", streams.placement_capacity("placement-a").durable)
        assert info.config.inactive_threshold == 3600
    finally:
        for broker, nc in brokers:
            await subscriber.close(broker, nc)


def test_the_learned_profile_moves_a_decision_as_the_trace_s_profile_does():
    # tests/placement/test_policies.py: with GPU pods expected, a CPU-only pod keeps off the
    # node whose CPU its GPUs need; knowing only the request itself, Thaw packs it there.
    from placement.engine import WorkloadProfile
    from tests.placement.conftest import node
    fleet = [node("tight", 2, cpu=22_000, mem=1 << 30), node("roomy", 8, cpu=128_000, mem=1 << 30)]
    gpu_pod, cpu_pod = PodRequest(10_000, 1, 1), PodRequest(4000, 1, 0)
    learned = LearnedWorkload(half_life_s=3600)
    learned.observe("llm", gpu_pod, 0)
    learned.observe("etl", cpu_pod, 0)
    profile = learned.profile(HOUR_MS)
    assert profile == WorkloadProfile.from_requests([gpu_pod, cpu_pod])  # bench/trace_replay.py's
    assert decide(CapacityIndex(fleet, workload=profile), cpu_pod, "thaw").node == "roomy"
    assert decide(CapacityIndex(fleet), cpu_pod, "thaw").node == "tight"


async def test_an_unplaceable_pod_counts_once_however_often_it_is_retried(r, js, nats_server, redis_url):
    worker = PlacementWorker(settings(nats_server, redis_url), js, r)
    await worker.on_capacity(a_node("n0", gpus=1), subjects.node_capacity("n0"))
    huge = a_function("huge", 30000)
    await Functions(r).put(huge)
    for _ in range(3):
        assert not await worker.place_one(huge)
    assert round(worker.workload.counts(now_ms())[pod_request(huge)], 3) == 1


def test_a_failed_sync_keeps_what_it_did_not_send():
    learned = LearnedWorkload(half_life_s=3600)
    learned.observe("f", PodRequest(100, 64, 1, vram_mib=6000), 0)
    unsent = learned.take_unsynced(HOUR_MS)
    assert learned.take_unsynced(HOUR_MS) == []
    learned.put_back(unsent)
    assert [round(c.count, 6) for c in learned.take_unsynced(2 * HOUR_MS)] == [0.25]


async def test_counts_seen_while_syncing_are_not_lost(r):
    store, learned = WorkloadCounts(r), LearnedWorkload(half_life_s=3600)
    request = PodRequest(100, 64, 1, vram_mib=6000)
    learned.observe("f", request, 0)
    sending = learned.take_unsynced(0)
    learned.observe("f", request, 0)  # while the sync is on its way
    learned.replace(await store.add(sending, 0, 3600))
    assert learned.counts(0) == {request: 2.0}
    learned.replace(await store.add(learned.take_unsynced(0), 0, 3600))
    assert learned.counts(0) == {request: 2.0}


def test_a_learned_profile_that_barely_moved_keeps_the_profile_in_use():
    # each new profile drops every ranking of the index; a sync every few seconds moves it a little
    from placement.engine import WorkloadProfile
    from placement.live_index import LiveIndex

    x, y = PodRequest(1000, 1024, 1, 500), PodRequest(2000, 1024, 1, 1000)
    used = WorkloadProfile.from_counts({x: 100, y: 100})
    live = LiveIndex(nodes=None, node_timeout_s=10)  # type: ignore[arg-type]  # no store: no index yet
    live.set_workload(used)
    live.set_workload(WorkloadProfile.from_counts({x: 101, y: 100}))  # a quarter of a point moved
    assert live.workload is used
    moved = WorkloadProfile.from_counts({x: 150, y: 100})  # ten points moved
    live.set_workload(moved)
    assert live.workload is moved
