"""API-key check with a short in-process cache, so the warm path needs no Redis round trip."""

import time

from thaw_core.store.apikeys import ApiKeys

from gateway.errors import unauthorized


def bearer(header: str | None) -> str:
    if not header or not header.startswith("Bearer "):
        return ""
    return header[7:].strip()


class KeyCache:
    def __init__(self, keys: ApiKeys, ttl_s: float):
        self._keys, self._ttl = keys, ttl_s
        self._cache: dict[str, tuple[str | None, float]] = {}

    async def tenant(self, authorization: str | None) -> str:
        """The tenant of the caller's key; raises a 401 ApiError for a missing or unknown key."""
        key = bearer(authorization)
        if not key:
            raise unauthorized()
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is None or hit[1] < now:
            tenant = await self._keys.tenant_of(key)
            # Unknown keys are cached briefly only, so a new key works at once.
            hit = (tenant, now + (self._ttl if tenant else 1.0))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = hit
        if hit[0] is None:
            raise unauthorized()
        return hit[0]
