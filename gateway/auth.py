"""API-key check with a short in-process cache, so the warm path needs no Redis round trip."""

from thaw_core.store.apikeys import ApiKeys

from gateway.errors import unauthorized
from gateway.ttl_cache import TtlCache


def bearer(header: str | None) -> str:
    if not header or not header.startswith("Bearer "):
        return ""
    return header[7:].strip()


class KeyCache:
    def __init__(self, keys: ApiKeys, ttl_s: float):
        # Unknown keys are cached briefly only, so a new key works at once.
        self._cache: TtlCache[str, str | None] = TtlCache(keys.tenant_of, lambda t: ttl_s if t else 1.0)

    def peek(self, authorization: str | None) -> str | None:
        """The tenant if the key is cached as valid, else None (then call `tenant`)."""
        return self._cache.peek(bearer(authorization))

    async def tenant(self, authorization: str | None) -> str:
        """The tenant of the caller's key; raises a 401 ApiError for a missing or unknown key."""
        key = bearer(authorization)
        if not key:
            raise unauthorized()
        tenant = await self._cache.get(key)
        if tenant is None:
            raise unauthorized()
        return tenant
