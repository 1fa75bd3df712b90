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
        self._keys = keys
        # Keyed by the Authorization header as sent, so a warm call's check is one dict lookup.
        # Unknown keys are cached briefly only, so a new key works at once.
        self._cache: TtlCache[str, str | None] = TtlCache(self._tenant_of_header, lambda t: ttl_s if t else 1.0)

    async def _tenant_of_header(self, authorization: str) -> str | None:
        return await self._keys.tenant_of(bearer(authorization))

    def peek(self, authorization: str | None) -> str | None:
        """The tenant if the key is cached as valid, else None (then call `tenant`)."""
        return self._cache.peek(authorization)

    async def tenant(self, authorization: str | None) -> str:
        """The tenant of the caller's key; raises a 401 ApiError for a missing or unknown key."""
        if not bearer(authorization):
            raise unauthorized()
        tenant = await self._cache.get(authorization)
        if tenant is None:
            raise unauthorized()
        return tenant
