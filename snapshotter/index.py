"""Redis index of snapshots: which exist per function, newest first, and in which tiers.

Keys (bus_schemas.redis_keys): ``snapshot_index(fn)`` is a sorted set id -> created_ms;
``snapshot(id)`` is a hash of the manifest's fields plus ``tiers`` (comma-separated, nearest
first). Both are written in one MULTI so a reader never sees an id without its hash.
The tiers' files are the truth about bytes; this index is the truth about what to restore.
"""

from dataclasses import dataclass

import msgspec
from redis.asyncio import Redis

from bus_schemas import redis_keys
from snapshotter.manifest import Manifest


@dataclass(frozen=True, slots=True)
class IndexedSnapshot:
    manifest: Manifest
    tiers: tuple[str, ...]


def _to_hash(m: Manifest, tiers: tuple[str, ...]) -> dict[str, str]:
    fields = {f: getattr(m, f) for f in m.__struct_fields__}
    out = {k: _field(v) for k, v in fields.items()}
    out["tiers"] = ",".join(tiers)
    return out


def _field(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    return msgspec.json.encode(v).decode() if isinstance(v, dict) else str(v)


def _from_hash(raw: dict) -> IndexedSnapshot:
    h = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
         for k, v in raw.items()}
    tiers = tuple(t for t in h.pop("tiers", "").split(",") if t)
    if "mounts" in h:  # the one structured field, kept as JSON
        h["mounts"] = msgspec.json.decode(h["mounts"] or "{}")
    m = msgspec.convert(h, type=Manifest, strict=False)
    return IndexedSnapshot(manifest=m, tiers=tiers)


class SnapshotIndex:
    def __init__(self, redis: Redis):
        self._r = redis

    async def add(self, m: Manifest, tiers: tuple[str, ...]) -> None:
        """Record a snapshot. Idempotent: adding the same id again overwrites its fields."""
        async with self._r.pipeline(transaction=True) as p:
            p.hset(redis_keys.snapshot(m.id), mapping=_to_hash(m, tiers))
            p.zadd(redis_keys.snapshot_index(m.fn), {m.id: m.created_ms})
            await p.execute()

    async def set_tiers(self, snapshot_id: str, tiers: tuple[str, ...]) -> None:
        """Update where a snapshot is held (after a promotion or a tier repair)."""
        if await self._r.exists(redis_keys.snapshot(snapshot_id)):
            await self._r.hset(redis_keys.snapshot(snapshot_id), "tiers", ",".join(tiers))

    async def get(self, snapshot_id: str) -> IndexedSnapshot | None:
        raw = await self._r.hgetall(redis_keys.snapshot(snapshot_id))
        return _from_hash(raw) if raw else None

    async def latest(self, fn: str) -> IndexedSnapshot | None:
        """The newest snapshot of `fn`, the one a new pod restores from."""
        for sid in await self._r.zrevrange(redis_keys.snapshot_index(fn), 0, 0):
            return await self.get(sid.decode() if isinstance(sid, bytes) else sid)
        return None

    async def for_function(self, fn: str) -> list[IndexedSnapshot]:
        """Snapshots of `fn`, newest first. Ids whose hash vanished are skipped."""
        ids = await self._r.zrevrange(redis_keys.snapshot_index(fn), 0, -1)
        out = []
        for sid in ids:
            item = await self.get(sid.decode() if isinstance(sid, bytes) else sid)
            if item is not None:
                out.append(item)
        return out

    async def functions(self) -> list[str]:
        """Names of functions that have at least one indexed snapshot, sorted."""
        prefix = redis_keys.snapshot_index("")
        names = set()
        async for key in self._r.scan_iter(match=f"{prefix}*"):
            k = key.decode() if isinstance(key, bytes) else key
            names.add(k[len(prefix):])
        return sorted(names)

    async def remove(self, fn: str, snapshot_id: str) -> None:
        """Forget a snapshot. Idempotent."""
        async with self._r.pipeline(transaction=True) as p:
            p.zrem(redis_keys.snapshot_index(fn), snapshot_id)
            p.delete(redis_keys.snapshot(snapshot_id))
            await p.execute()
