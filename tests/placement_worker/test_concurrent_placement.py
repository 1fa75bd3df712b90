"""Two placement workers deciding at once against one Redis never over-commit a GPU."""

import asyncio

from bus_schemas.functions import FunctionSpec, Resources, Scaling
from bus_schemas.nodes import GpuCapacity, NodeCapacity
from thaw_core.clock import now_ms
from thaw_core.store.client import connect_redis
from thaw_core.store.functions import Functions
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods

from placement.settings import PlacementSettings
from placement.worker import PlacementWorker


async def test_two_placement_workers_never_over_commit(redis_url, js, nats_server):
    settings = PlacementSettings(nats_url=nats_server.url, redis_url=redis_url)
    r1, r2 = connect_redis(redis_url), connect_redis(redis_url)
    try:
        for n in range(3):
            gpus = tuple(GpuCapacity(index=i, model="Mock-24G", vram_mib=24576) for i in range(2))
            await Nodes(r1).upsert_capacity(NodeCapacity(node=f"n{n}", cpu_milli=64000, memory_mib=1 << 20, gpus=gpus))
            await Nodes(r1).heartbeat(f"n{n}", now_ms())
        spec = FunctionSpec(name="big", command=("x",), resources=Resources(vram_mib=10000, cpu_milli=100, memory_mib=64),
                            scaling=Scaling(max_pods=100), placement_policy="best-fit")
        await Functions(r1).put(spec)
        a, b = PlacementWorker(settings, js, r1), PlacementWorker(settings, js, r2)

        async def place_many(worker):
            placed = 0
            for _ in range(10):
                placed += await worker.place_one(spec)
            return placed

        placed = await asyncio.gather(place_many(a), place_many(b))
        # 6 GPUs x 24576 MiB hold two 10000 MiB pods each: exactly 12 fit, whoever decides.
        assert sum(placed) == 12
        assert len(await Pods(r1).live("big")) == 12
        for node in await Nodes(r1).all():
            for g in node.gpus:
                assert g.vram_reserved_mib <= g.vram_mib
                assert g.vram_reserved_mib == 20000
    finally:
        await r1.aclose()
        await r2.aclose()
