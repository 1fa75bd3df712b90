"""Function specs cached in-process, invalidated by `fn.*` events (and a short TTL as backstop)."""

from bus_schemas.functions import FunctionSpec
from thaw_core.store.functions import Functions

from gateway.ttl_cache import TtlCache


class SpecCache:
    def __init__(self, functions: Functions, ttl_s: float):
        self._cache: TtlCache[str, FunctionSpec | None] = TtlCache(functions.get, lambda _: ttl_s)

    async def get(self, name: str) -> FunctionSpec | None:
        return await self._cache.get(name)

    def peek(self, name: str) -> FunctionSpec | None:
        """The spec if cached and fresh, else None (also for an unknown function)."""
        return self._cache.peek(name)

    def invalidate(self, name: str) -> None:
        self._cache.invalidate(name)
