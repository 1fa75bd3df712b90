"""Deployed function specs. Names are global; each function belongs to one tenant."""

import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.codec import decode, encode
from bus_schemas.functions import FunctionSpec

_PUT = """
local owner = redis.call('HGET', KEYS[1], 'tenant')
if owner and owner ~= ARGV[2] then return -1 end
local rev = redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'tenant', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return rev
"""


class FunctionOwnedElsewhere(Exception):
    """A function of that name belongs to another tenant."""


class Functions:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._put = r.register_script(_PUT)

    async def put(self, spec: FunctionSpec) -> int:
        """Create or replace; returns the new revision. Raises FunctionOwnedElsewhere."""
        rev = await self._put(keys=[K.function(spec.name), K.FUNCTIONS],
                              args=[encode(spec).decode(), spec.tenant, spec.name])
        if int(rev) < 0:
            raise FunctionOwnedElsewhere(spec.name)
        return int(rev)

    async def get(self, name: str) -> FunctionSpec | None:
        raw = await self._r.hget(K.function(name), "spec")
        return decode(raw, FunctionSpec) if raw else None

    async def all(self) -> list[FunctionSpec]:
        names = sorted(await self._r.smembers(K.FUNCTIONS))
        specs = [await self.get(n) for n in names]
        return [s for s in specs if s is not None]

    async def delete(self, name: str) -> bool:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(K.function(name))
            pipe.srem(K.FUNCTIONS, name)
            deleted, _ = await pipe.execute()
        return bool(deleted)
