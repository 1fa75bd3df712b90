"""A function whose pods keep failing to start gets its next pod only after the backoff, and a
placement worker started afresh (a restart) keeps that pace: the count is in Redis."""

from bus_schemas.functions import FunctionSpec, Resources, Scaling, spec_digest
from bus_schemas.nodes import NodeCapacity
from thaw_core.clock import now_ms
from thaw_core.store.client import connect_redis
from thaw_core.store.functions import Functions
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods
from thaw_core.store.start_failures import StartFailureLog

from placement.settings import PlacementSettings
from placement.worker import PlacementWorker


async def test_a_restarted_placement_worker_still_backs_off_a_crash_loop(redis_url, js, nats_server):
    settings = PlacementSettings(nats_url=nats_server.url, redis_url=redis_url)
    r = connect_redis(redis_url)
    try:
        await Nodes(r).upsert_capacity(NodeCapacity(node="crash-node", cpu_milli=64000, memory_mib=1 << 20))
        await Nodes(r).heartbeat("crash-node", now_ms())
        spec = FunctionSpec(name="crashy", command=("x",), resources=Resources(vram_mib=0, gpu_count=0, cpu_milli=100,
                                                                              memory_mib=64),
                            scaling=Scaling(max_pods=10))
        await Functions(r).put(spec)
        failures = StartFailureLog(r)
        for _ in range(3):  # the next pod may start 4 s after the last failure
            await failures.record(spec.name, spec_digest(spec), "the worker exited with exit code 3", now_ms())

        assert not await PlacementWorker(settings, js, r).place_one(spec)
        assert not await PlacementWorker(settings, js, r).place_one(spec), "a restart forgets no backoff"
        assert await Pods(r).live("crashy") == []

        fixed = FunctionSpec(name="crashy", command=("fixed",), resources=spec.resources, scaling=spec.scaling)
        await Functions(r).put(fixed)
        assert await PlacementWorker(settings, js, r).place_one(fixed), "a redeployed spec starts at once"
        assert len(await Pods(r).live("crashy")) == 1
    finally:
        await r.aclose()
