"""The snapshot index as every service but the snapshotter sees it: read-only, plus liveness.

The snapshotter writes `redis_keys.snapshot_index(fn)` and `redis_keys.snapshot(id)` (its
`snapshotter.index` module) and refreshes `redis_keys.snapshotter(node)` while it runs. Placement
reads them to choose a snapshot for a new pod, the agent to decide whether to ask for one, the
gateway to list them. The key layout is the contract (bus_schemas.redis_keys); this module is the
one reader of it outside the snapshotter, so no service imports another.
"""

from dataclasses import dataclass

import redis.asyncio as redis

from bus_schemas import redis_keys as K

SHARED_TIER = "shared"  # a tier every node can fetch from


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    id: str
    fn: str
    node: str  # where it was taken
    runtime: str
    created_ms: int
    size_bytes: int  # compressed
    raw_bytes: int
    tiers: tuple[str, ...]  # nearest first
    port: int
    spec_digest: str
    arch: str
    gpu: bool = False  # holds GPU memory: only a node offering "cuda-checkpoint" may restore it

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> "SnapshotInfo":
        return cls(id=h.get("id", ""), fn=h.get("fn", ""), node=h.get("node", ""), runtime=h.get("runtime", ""),
                   created_ms=int(h.get("created_ms", 0)), size_bytes=int(h.get("size_bytes", 0)),
                   raw_bytes=int(h.get("raw_bytes", 0)), tiers=tuple(t for t in h.get("tiers", "").split(",") if t),
                   port=int(h.get("port", 0)), spec_digest=h.get("spec_digest", ""), arch=h.get("arch", ""),
                   gpu=h.get("gpu", "0") not in ("0", "", "False", "false"))

    def reachable_from(self, node: str) -> bool:
        """Taken on `node` (its local tier), or held in a tier every node reads."""
        return self.node == node or SHARED_TIER in self.tiers


class SnapshotCatalog:
    def __init__(self, r: redis.Redis):
        self._r = r

    async def get(self, snapshot_id: str) -> SnapshotInfo | None:
        h = await self._r.hgetall(K.snapshot(snapshot_id))
        return SnapshotInfo.from_hash(h) if h else None

    async def for_function(self, fn: str) -> list[SnapshotInfo]:
        """Snapshots of `fn`, newest first; an id whose hash vanished is skipped."""
        ids = await self._r.zrevrange(K.snapshot_index(fn), 0, -1)
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(K.snapshot(sid))
            hashes = await pipe.execute()
        return [SnapshotInfo.from_hash(h) for h in hashes if h]

    async def all(self) -> list[SnapshotInfo]:
        """Every indexed snapshot, by function name, newest first within a function."""
        prefix = K.snapshot_index("")
        fns = sorted({key[len(prefix):] async for key in self._r.scan_iter(match=f"{prefix}*")})
        return [s for fn in fns for s in await self.for_function(fn)]

    async def usable(self, fn: str, spec_digest: str, node: str, runtime: str = "process") -> SnapshotInfo | None:
        """The newest snapshot a new pod of `fn` on `node` may restore from, or None.

        It must match the function's current spec (`spec_digest`) and runtime, be reachable from
        `node`, and `node` must have a live snapshotter; one holding GPU memory also needs
        "cuda-checkpoint" there. None means cold start; the agent still falls back to a cold
        start if the restore itself fails.
        """
        offered = await self.capabilities(node)
        if "criu" not in offered or (runtime == "container" and "container" not in offered):
            return None
        for s in await self.for_function(fn):
            if (s.spec_digest == spec_digest and s.runtime == runtime and s.reachable_from(node)
                    and (not s.gpu or "cuda-checkpoint" in offered)):
                return s
        return None

    async def capabilities(self, node: str) -> tuple[str, ...]:
        """What the live snapshotter on `node` offers: ("criu",) for process workers,
        ("criu", "container") for container workers, plus "cuda-checkpoint" where GPU memory
        can be checkpointed; () when none runs."""
        raw = await self._r.get(K.snapshotter(node))
        return tuple(c for c in (raw or "").split(",") if c)


async def announce_snapshotter(r: redis.Redis, node: str, capabilities: tuple[str, ...], ttl_s: float) -> None:
    """Called by a running snapshotter more often than `ttl_s`: it is alive and offers these."""
    await r.set(K.snapshotter(node), ",".join(capabilities), px=int(ttl_s * 1000))


async def withdraw_snapshotter(r: redis.Redis, node: str) -> None:
    await r.delete(K.snapshotter(node))
