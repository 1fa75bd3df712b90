"""Values loaded on a miss and kept for a while, where concurrent misses of one key share one load.

Without the sharing, the 64 calls in flight when an entry expires each went to Redis at once
(and the client opened a connection for each)."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, load: Callable[[K], Awaitable[V]], ttl_s: Callable[[V], float], max_entries: int = 10_000):
        self._load, self._ttl_s, self._max = load, ttl_s, max_entries
        self._values: dict[K, tuple[V, float]] = {}
        self._loading: dict[K, asyncio.Future] = {}

    def peek(self, key: K, default=None):
        """The cached value if fresh, else `default`; never loads (for callers that cannot wait)."""
        hit = self._values.get(key)
        if hit is not None and hit[1] >= time.monotonic():
            return hit[0]
        return default

    async def get(self, key: K) -> V:
        hit = self._values.get(key)
        if hit is not None and hit[1] >= time.monotonic():
            return hit[0]
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._refresh(key))
        return await asyncio.shield(loading)

    async def _refresh(self, key: K) -> V:
        me = asyncio.current_task()
        try:
            value = await self._load(key)
        finally:
            current = self._loading.get(key) is me
            if current:
                del self._loading[key]
        if not current:  # invalidated while loading: what was read may be stale; serve it, keep it not
            return value
        if len(self._values) >= self._max:
            self._values.clear()
        self._values[key] = (value, time.monotonic() + self._ttl_s(value))
        return value

    def invalidate(self, key: K) -> None:
        self._values.pop(key, None)
        self._loading.pop(key, None)
