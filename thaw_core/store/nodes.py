"""Node capacity and liveness in Redis, and the ledger view placement decides over."""

from dataclasses import dataclass

import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.codec import DecodeError, decode, encode
from bus_schemas.nodes import NodeCapacity
from thaw_core.store.replies import texts


@dataclass(frozen=True, slots=True)
class GpuUsage:
    index: int
    model: str
    vram_mib: int
    vram_reserved_mib: int
    milli_reserved: int


@dataclass(frozen=True, slots=True)
class NodeUsage:
    """A node's totals (from its capacity report) and what the ledger has reserved on it."""

    name: str
    cpu_milli: int
    cpu_reserved: int
    memory_mib: int
    memory_reserved: int
    heartbeat_ms: int
    gpu_source: str
    gpus: tuple[GpuUsage, ...]
    degraded: str = ""  # NodeCapacity.degraded of its last report: "" while healthy, else why


def degraded_nodes(nodes: list[NodeUsage], now_ms: int, live_within_s: float) -> dict[str, str]:
    """Node -> reason, for the degraded nodes that heartbeated within `live_within_s` (a node
    gone silent is lost, not degraded: placement reclaims its pods)."""
    cutoff = now_ms - int(live_within_s * 1000)
    return {n.name: n.degraded for n in nodes if n.degraded and n.heartbeat_ms >= cutoff}


class Nodes:
    def __init__(self, r: redis.Redis):
        self._r = r

    async def upsert_capacity(self, cap: NodeCapacity) -> None:
        """Record totals; reserved counters are the ledger's and are left as they are."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(K.node(cap.node), mapping={
                "cpu_milli": cap.cpu_milli, "memory_mib": cap.memory_mib, "gpu_count": len(cap.gpus),
                "gpu_source": cap.gpu_source, "capacity": encode(cap).decode(), "capacity_ms": cap.at_ms,
            })
            for g in cap.gpus:
                pipe.hset(K.gpu(cap.node, g.index), mapping={"vram_mib": g.vram_mib, "model": g.model})
            pipe.sadd(K.NODES, cap.node)
            await pipe.execute()

    async def heartbeat(self, node: str, at_ms: int) -> None:
        await self._r.hset(K.node(node), "heartbeat_ms", at_ms)

    async def all(self) -> list[NodeUsage]:
        names = sorted(texts(await self._r.smembers(K.NODES)))
        if not names:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.hgetall(K.node(n))
            node_hashes = await pipe.execute()
        counts = [int(h.get("gpu_count", 0)) for h in node_hashes]
        async with self._r.pipeline(transaction=False) as pipe:
            for n, c in zip(names, counts):
                for i in range(c):
                    pipe.hgetall(K.gpu(n, i))
            gpu_hashes = iter(await pipe.execute())
        return [_node_usage(n, h, [next(gpu_hashes) for _ in range(c)])
                for n, h, c in zip(names, node_hashes, counts)]


def _node_usage(name: str, h: dict[str, str], gpu_hashes: list[dict[str, str]]) -> NodeUsage:
    gpus = tuple(
        GpuUsage(index=i, model=g.get("model", ""), vram_mib=int(g.get("vram_mib", 0)),
                 vram_reserved_mib=int(g.get("vram_reserved", 0)), milli_reserved=int(g.get("milli_reserved", 0)))
        for i, g in enumerate(gpu_hashes)
    )
    return NodeUsage(
        name=name, cpu_milli=int(h.get("cpu_milli", 0)), cpu_reserved=int(h.get("cpu_reserved", 0)),
        memory_mib=int(h.get("memory_mib", 0)), memory_reserved=int(h.get("memory_reserved", 0)),
        heartbeat_ms=int(h.get("heartbeat_ms", 0)), gpu_source=h.get("gpu_source", ""), gpus=gpus,
        degraded=_degraded(h.get("capacity", "")),
    )


def _degraded(capacity: str) -> str:
    """The `degraded` field of a stored capacity report ("" for one from before the field)."""
    if not capacity:
        return ""
    try:
        return decode(capacity, NodeCapacity).degraded
    except DecodeError:
        return ""
