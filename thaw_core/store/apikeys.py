"""API keys per tenant. Only a key's SHA-256 is stored; the key itself is shown once."""

import hashlib
import re
import secrets

import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.functions import TENANT_PATTERN

KEY_PREFIX = "thaw_"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, r: redis.Redis):
        self._r = r

    async def create(self, tenant: str) -> str:
        """A new key for `tenant`. Raises ValueError for a name no function spec could carry
        (it would break every listing of that tenant's functions)."""
        if not re.fullmatch(TENANT_PATTERN, tenant):
            raise ValueError(f"tenant {tenant!r}: use 1-63 lowercase letters, digits, '-' or '_', starting with "
                             "a letter or digit (e.g. team-c)")
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        await self._r.set(K.api_key(key_digest(key)), tenant)
        return key

    async def tenant_of(self, key: str) -> str | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 256:
            return None
        return await self._r.get(K.api_key(key_digest(key)))

    async def revoke(self, key: str) -> bool:
        return bool(await self._r.delete(K.api_key(key_digest(key))))
