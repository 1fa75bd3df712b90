"""Deployed function specs. Names are global; each function belongs to one tenant.

Each function also gets its own host uid for its workers when it is first deployed (kept on
redeploys, never reused: a counter), so no two functions' workers share file ownership
(thaw_core/sandbox). The uid is the store's, never the message's.
"""

import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.codec import decode, encode
from bus_schemas.functions import FunctionSpec
from thaw_core.store.bulk import BulkReads
from thaw_core.store.replies import text, texts

_PUT = """
local owner = redis.call('HGET', KEYS[1], 'tenant')
if owner and owner ~= ARGV[2] then return -1 end
local rev = redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'tenant', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'uid') == 0 then
  redis.call('HSET', KEYS[1], 'uid', tonumber(ARGV[4]) + redis.call('INCR', KEYS[3]))
end
return rev
"""
WORKER_UID_BASE = 2_000_000
"""Function n's workers run as host uid WORKER_UID_BASE + n: far above login users and the
100000-165535 ranges that /etc/subuid usually hands to rootless containers."""


class FunctionOwnedElsewhere(Exception):
    """A function of that name belongs to another tenant."""


class Functions:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._put = r.register_script(_PUT)
        self._bulk = BulkReads(r)

    async def put(self, spec: FunctionSpec) -> int:
        """Create or replace; returns the new revision. Raises FunctionOwnedElsewhere."""
        rev = await self._put(keys=[K.function(spec.name), K.FUNCTIONS, K.WORKER_UIDS],
                              args=[encode(spec).decode(), spec.tenant, spec.name, WORKER_UID_BASE])
        if int(rev) < 0:
            raise FunctionOwnedElsewhere(spec.name)
        return int(rev)

    async def get(self, name: str) -> FunctionSpec | None:
        raw = await self._r.hget(K.function(name), "spec")
        return decode(raw, FunctionSpec) if raw else None

    async def worker_uid(self, name: str) -> int | None:
        """The host uid of the function's workers, None for a function not deployed (or
        deployed before uids existed: redeploy it)."""
        raw = await self._r.hget(K.function(name), "uid")
        return int(raw) if raw else None

    async def all(self) -> list[FunctionSpec]:
        return [s for s in (await self.get_many(await self.names())).values() if s is not None]

    async def names(self) -> list[str]:
        """Every deployed function's name, sorted."""
        return sorted(texts(await self._r.smembers(K.FUNCTIONS)))

    async def get_many(self, names: list[str]) -> dict[str, FunctionSpec | None]:
        """The specs of `names` (None for one not deployed), by one command each 2,000 functions
        (thaw_core/store/bulk.py: roles that may write a function's hash only)."""
        raws = await self._bulk.fields([K.function(n) for n in names], ("spec",))
        return {n: decode(raw, FunctionSpec) if raw else None for n, (raw,) in zip(names, raws)}

    async def record_unplaceable(self, name: str, why: str, now_ms: int) -> None:
        """Why placement could not place a pod of `name` just now, so a waiting caller's 503 says it."""
        await self.record_unplaceable_many({name: why}, now_ms)

    async def record_unplaceable_many(self, whys: dict[str, str], now_ms: int) -> None:
        """`record_unplaceable` of each function -> why, in one round trip."""
        if not whys:
            return
        async with self._r.pipeline(transaction=False) as pipe:
            for name, why in whys.items():
                pipe.hset(K.function(name), mapping={"unplaceable": why, "unplaceable_ms": now_ms})
            await pipe.execute()

    async def unplaceable(self, name: str, since_ms: int) -> str:
        """Why placement last could not place `name`, if that was after `since_ms`; else ""."""
        why, at_ms = await self._r.hmget(K.function(name), "unplaceable", "unplaceable_ms")
        return text(why) if why and at_ms and int(at_ms) >= since_ms else ""

    async def delete(self, name: str) -> bool:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(K.function(name))
            pipe.srem(K.FUNCTIONS, name)
            deleted, _ = await pipe.execute()
        return bool(deleted)
