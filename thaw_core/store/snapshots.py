"""The snapshot aggregate: `SnapshotRecord` is its fields, `SnapshotIndex` (the snapshotter)
writes it, `SnapshotCatalog` (everyone) reads it and decides whether one is usable.

Keys (bus_schemas.redis_keys): `snapshot_index(fn)` is a sorted set id -> created_ms;
`snapshot(id)` a hash of the manifest's fields plus `tiers` (comma-separated, nearest first),
both written in one MULTI so a reader never sees an id without its hash. `snapshotter(node)`
says a snapshotter runs there and what it offers; `snapshot_failure(fn)` why the last snapshot
of a function failed. The tiers' files are the truth about bytes; this index is the truth about
what to restore.
"""

import msgspec
import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.snapshots import Manifest
from thaw_core.store.replies import Fields, optional_text, text, text_hash, texts

SHARED_TIER = "shared"  # a tier every node can fetch from


class SnapshotRecord(Manifest, frozen=True, kw_only=True):
    """A snapshot as the index holds it: its manifest, and the tiers that hold it."""

    tiers: tuple[str, ...] = ()  # nearest first

    def reachable_from(self, node: str) -> bool:
        """Taken on `node` (its local tier), or held in a tier every node reads."""
        return self.node == node or SHARED_TIER in self.tiers


class SnapshotFailure(msgspec.Struct, frozen=True, kw_only=True):
    error: str
    at_ms: int


def _to_hash(m: Manifest, tiers: tuple[str, ...]) -> Fields:
    out: Fields = {name: _field(getattr(m, name)) for name in Manifest.__struct_fields__}
    out["tiers"] = ",".join(tiers)
    return out


def _field(v: object) -> str:
    if isinstance(v, bool):
        return str(int(v))
    return msgspec.json.encode(v).decode() if isinstance(v, dict) else str(v)


def _from_hash(h: dict[str, str]) -> SnapshotRecord:
    fields: dict[str, object] = {k: v for k, v in h.items() if k in SnapshotRecord.__struct_fields__}
    fields["tiers"] = tuple(t for t in h.get("tiers", "").split(",") if t)
    fields["mounts"] = msgspec.json.decode(h.get("mounts") or "{}")  # the one structured field, kept as JSON
    return msgspec.convert(fields, SnapshotRecord, strict=False)


class SnapshotCatalog:
    def __init__(self, r: redis.Redis):
        self._r = r

    async def get(self, snapshot_id: str) -> SnapshotRecord | None:
        h = text_hash(await self._r.hgetall(K.snapshot(snapshot_id)))
        return _from_hash(h) if h else None

    async def for_function(self, fn: str) -> list[SnapshotRecord]:
        """Snapshots of `fn`, newest first; an id whose hash vanished is skipped."""
        ids = texts(await self._r.zrevrange(K.snapshot_index(fn), 0, -1))
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for sid in ids:
                pipe.hgetall(K.snapshot(sid))
            hashes = await pipe.execute()
        return [_from_hash(text_hash(h)) for h in hashes if h]

    async def latest(self, fn: str) -> SnapshotRecord | None:
        """The newest snapshot of `fn`."""
        for sid in texts(await self._r.zrevrange(K.snapshot_index(fn), 0, 0)):
            return await self.get(sid)
        return None

    async def functions(self) -> list[str]:
        """Names of functions that have at least one indexed snapshot, sorted."""
        prefix = K.snapshot_index("")
        return sorted({text(key)[len(prefix):] async for key in self._r.scan_iter(match=f"{prefix}*")})

    async def all(self) -> list[SnapshotRecord]:
        """Every indexed snapshot, by function name, newest first within a function."""
        return [s for fn in await self.functions() for s in await self.for_function(fn)]

    async def usable(self, fn: str, spec_digest: str, node: str, runtime: str = "process") -> SnapshotRecord | None:
        """The newest snapshot a new pod of `fn` on `node` may restore from, or None.

        It must match the function's current spec (`spec_digest`) and runtime, be reachable from
        `node`, and `node` must have a live snapshotter; one holding GPU memory also needs
        "cuda-checkpoint" there. None means cold start; the agent still falls back to a cold
        start if the restore itself fails (the snapshotter checks the image against its host).
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
        raw = optional_text(await self._r.get(K.snapshotter(node)))
        return tuple(c for c in (raw or "").split(",") if c)

    async def last_failure(self, fn: str) -> SnapshotFailure | None:
        """Why the last snapshot of `fn` failed, if one did since its last success."""
        h = text_hash(await self._r.hgetall(K.snapshot_failure(fn)))
        return msgspec.convert(h, SnapshotFailure, strict=False) if h else None


class SnapshotIndex(SnapshotCatalog):
    """The snapshotter's writes."""

    async def add(self, m: Manifest, tiers: tuple[str, ...]) -> None:
        """Record a snapshot. Idempotent: adding the same id again overwrites its fields. A
        function's recorded failure ends with it."""
        async with self._r.pipeline(transaction=True) as p:
            p.hset(K.snapshot(m.id), mapping=_to_hash(m, tiers))
            p.zadd(K.snapshot_index(m.fn), {m.id: m.created_ms})
            p.delete(K.snapshot_failure(m.fn))
            await p.execute()

    async def remove(self, fn: str, snapshot_id: str) -> None:
        """Forget a snapshot. Idempotent."""
        async with self._r.pipeline(transaction=True) as p:
            p.zrem(K.snapshot_index(fn), snapshot_id)
            p.delete(K.snapshot(snapshot_id))
            await p.execute()

    async def record_failure(self, fn: str, error: str, now_ms: int) -> None:
        failure: Fields = {"error": error[:2000], "at_ms": now_ms}
        await self._r.hset(K.snapshot_failure(fn), mapping=failure)


async def announce_snapshotter(r: redis.Redis, node: str, capabilities: tuple[str, ...], ttl_s: float) -> None:
    """Called by a running snapshotter more often than `ttl_s`: it is alive and offers these."""
    await r.set(K.snapshotter(node), ",".join(capabilities), px=int(ttl_s * 1000))


async def withdraw_snapshotter(r: redis.Redis, node: str) -> None:
    await r.delete(K.snapshotter(node))
