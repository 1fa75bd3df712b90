"""Node capacity and liveness in Redis, the ledger view placement decides over, and whether an
operator is draining the node (`thaw drain`): a draining node takes no new pod (the ledger's
reserve refuses it) and placement hands its pods over to other nodes (placement/drain.py).
"""

from dataclasses import dataclass

import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.codec import DecodeError, decode, encode
from bus_schemas.nodes import NodeCapacity
from thaw_core.store.bulk import BulkReads
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
    draining_since_ms: int = 0  # when an operator began draining it; 0 while it is not draining
    drain_waiting: str = ""  # while draining: why some of its pods cannot leave yet ("" when none waits)

    @property
    def draining(self) -> bool:
        return self.draining_since_ms > 0


@dataclass(frozen=True, slots=True)
class NodeMark:
    """Of one node: its version (bumped by every ledger script and capacity report that touches
    it), its last heartbeat, and when its drain began (0: not draining)."""

    version: int
    heartbeat_ms: int
    draining_since_ms: int


def degraded_nodes(nodes: list[NodeUsage], now_ms: int, live_within_s: float) -> dict[str, str]:
    """Node -> reason, for the degraded nodes that heartbeated within `live_within_s` (a node
    gone silent is lost, not degraded: placement reclaims its pods)."""
    cutoff = now_ms - int(live_within_s * 1000)
    return {n.name: n.degraded for n in nodes if n.degraded and n.heartbeat_ms >= cutoff}


class Nodes:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._bulk = BulkReads(r)

    async def set_draining(self, node: str, draining: bool, now_ms: int) -> bool:
        """Mark `node` draining (from `now_ms`, or from an earlier drain still on) or not. Safe to
        repeat. False when no node of that name ever reported its capacity."""
        # The drain mark has a key of its own (K.node_drain), which the gateway may write; the
        # node's hash, which it may only read, says whether the node exists. A node's hash is
        # never deleted, so the two steps need no transaction.
        if not await self._r.hexists(K.node(node), "cpu_milli"):
            return False
        if draining:
            await self._r.hsetnx(K.node_drain(node), "draining_ms", now_ms)  # a drain on keeps its start
        else:
            await self._r.delete(K.node_drain(node))
        return True

    async def note_drain_waiting(self, node: str, why: str) -> None:
        """Why `node`'s drain waits ("" once nothing does): placement's, for `thaw drain` to show."""
        await self._r.hset(K.node_drain(node), "drain_waiting", why)

    async def upsert_capacity(self, cap: NodeCapacity) -> None:
        """Record totals; reserved counters are the ledger's and are left as they are."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(K.node(cap.node), mapping={
                "cpu_milli": cap.cpu_milli, "memory_mib": cap.memory_mib, "gpu_count": len(cap.gpus),
                "gpu_source": cap.gpu_source, "capacity": encode(cap).decode(), "capacity_ms": cap.at_ms,
            })
            for g in cap.gpus:
                pipe.hset(K.gpu(cap.node, g.index), mapping={"vram_mib": g.vram_mib, "model": g.model})
            pipe.hincrby(K.node(cap.node), "version", 1)
            pipe.sadd(K.NODES, cap.node)
            await pipe.execute()

    async def heartbeat(self, node: str, at_ms: int) -> None:
        await self._r.hset(K.node(node), "heartbeat_ms", at_ms)

    async def heartbeats(self, at_ms: dict[str, int]) -> None:
        """Each node's last heartbeat, by one command: a fleet sends a heartbeat per node per
        second, and one HSET each cost placement half its time, a pipeline of them still 5%
        (bench/fleet_replay.py)."""
        await self._bulk.set_field("heartbeat_ms", {K.node(node): ms for node, ms in at_ms.items()})

    async def all(self) -> list[NodeUsage]:
        return await self.read(await self.names())

    async def names(self) -> list[str]:
        return sorted(texts(await self._r.smembers(K.NODES)))

    async def marks(self, names: list[str]) -> dict[str, NodeMark]:
        """What changes of each node without a change of its ledger or capacity: one small read
        per node, so that a reader may re-read in full only the nodes whose version moved. Two
        commands for the whole fleet (thaw_core/store/bulk.py: placement's role only)."""
        nodes = await self._bulk.fields([K.node(n) for n in names], ("version", "heartbeat_ms"))
        drains = await self._bulk.fields([K.node_drain(n) for n in names], ("draining_ms",))
        return {n: NodeMark(version=int(v or 0), heartbeat_ms=int(hb or 0), draining_since_ms=int(d or 0))
                for n, (v, hb), (d,) in zip(names, nodes, drains)}

    async def read(self, names: list[str]) -> list[NodeUsage]:
        """Nodes `names` in full (those that exist)."""
        if not names:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.hgetall(K.node(n))
                pipe.hgetall(K.node_drain(n))
            fetched = await pipe.execute()
        node_hashes, drains = fetched[0::2], fetched[1::2]
        counts = [int(h.get("gpu_count", 0)) for h in node_hashes]
        async with self._r.pipeline(transaction=False) as pipe:
            for n, c in zip(names, counts):
                for i in range(c):
                    pipe.hgetall(K.gpu(n, i))
            gpu_hashes = iter(await pipe.execute())
        return [_node_usage(n, h, [next(gpu_hashes) for _ in range(c)], d)
                for n, h, c, d in zip(names, node_hashes, counts, drains)]


def _node_usage(name: str, h: dict[str, str], gpu_hashes: list[dict[str, str]], drain: dict[str, str]) -> NodeUsage:
    gpus = tuple(
        GpuUsage(index=i, model=g.get("model", ""), vram_mib=int(g.get("vram_mib", 0)),
                 vram_reserved_mib=int(g.get("vram_reserved", 0)), milli_reserved=int(g.get("milli_reserved", 0)))
        for i, g in enumerate(gpu_hashes)
    )
    return NodeUsage(
        name=name, cpu_milli=int(h.get("cpu_milli", 0)), cpu_reserved=int(h.get("cpu_reserved", 0)),
        memory_mib=int(h.get("memory_mib", 0)), memory_reserved=int(h.get("memory_reserved", 0)),
        heartbeat_ms=int(h.get("heartbeat_ms", 0)), gpu_source=h.get("gpu_source", ""), gpus=gpus,
        degraded=_degraded(h.get("capacity", "")), draining_since_ms=int(drain.get("draining_ms", 0)),
        drain_waiting=drain.get("drain_waiting", "") if "draining_ms" in drain else "",
    )


def _degraded(capacity: str) -> str:
    """The `degraded` field of a stored capacity report ("" for one from before the field)."""
    if not capacity:
        return ""
    try:
        return decode(capacity, NodeCapacity).degraded
    except DecodeError:
        return ""
