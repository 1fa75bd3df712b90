"""Function specs cached in-process, invalidated by `fn.*` events (and a short TTL as backstop)."""

import time

from bus_schemas.functions import FunctionSpec
from thaw_core.store.functions import Functions


class SpecCache:
    def __init__(self, functions: Functions, ttl_s: float):
        self._functions, self._ttl = functions, ttl_s
        self._cache: dict[str, tuple[FunctionSpec | None, float]] = {}

    async def get(self, name: str) -> FunctionSpec | None:
        hit = self._cache.get(name)
        if hit is None or hit[1] < time.monotonic():
            hit = (await self._functions.get(name), time.monotonic() + self._ttl)
            self._cache[name] = hit
        return hit[0]

    def invalidate(self, name: str) -> None:
        self._cache.pop(name, None)
