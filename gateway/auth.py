"""API-key check with a short in-process cache, so the warm path needs no Redis round trip, and
each key's request rate (gateway/rate_limit.py)."""

import time

from thaw_core.store.apikeys import ADMIN, ApiKeys, Caller

from gateway.errors import ApiError, unauthorized
from gateway.rate_limit import KeyRates
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
        self._cache: TtlCache[str | None, Caller | None] = TtlCache(self._caller_of_header, lambda c: ttl_s if c else 1.0)
        self._rates = KeyRates()

    async def _caller_of_header(self, authorization: str | None) -> Caller | None:
        return await self._keys.caller(bearer(authorization))

    def peek(self, authorization: str | None) -> str | None:
        """The tenant if the key is cached as valid, else None (then call `tenant`). Any role
        may invoke, so the warm path needs no more."""
        found = self._cache.peek(authorization)
        if found is None or (found.rate_per_s and self._rates.wait_s(authorization, found.rate_per_s,
                                                                     time.monotonic())):
            return None
        return found.tenant

    async def caller(self, authorization: str | None) -> Caller:
        """Who the caller's key speaks for; raises a 401 ApiError for a missing or unknown key."""
        if not bearer(authorization):
            raise unauthorized()
        found = await self._cache.get(authorization)
        if found is None:
            raise unauthorized()
        if found.rate_per_s and (wait_s := self._rates.wait_s(authorization, found.rate_per_s, time.monotonic())):
            raise ApiError(429, "rate_limited", f"this key may make {found.rate_per_s:g} calls a second; retry "
                                                f"after {wait_s:.2f}s or ask an admin for a key with a higher rate",
                           retry_after_s=wait_s)
        return found

    async def tenant(self, authorization: str | None) -> str:
        return (await self.caller(authorization)).tenant

    async def create(self, tenant: str, role: str, rate_per_s: float) -> str:
        return await self._keys.create(tenant, role, rate_per_s)

    async def admin_tenant(self, authorization: str | None, action: str) -> str:
        """The tenant of an admin key; a 403 saying so for an invoker key (401 for none)."""
        found = await self.caller(authorization)
        if found.role != ADMIN:
            raise ApiError(403, "forbidden", f"{action} needs an admin key of tenant {found.tenant!r}; this key "
                                             f"is an {found.role} key (ask an admin: `thaw keys --role invoker` "
                                             "makes keys like it)")
        return found.tenant
