"""API keys per tenant, each with a role. Only a key's SHA-256 is stored; the key itself is
shown once. The stored value is "<tenant>:<role>:<calls per second>" (a tenant name holds no
':'; rate 0 is unlimited); a value with no role, written before roles existed, is an unlimited
admin key: those keys could already do everything.

Roles: `admin` deploys and deletes its tenant's functions and makes keys for its tenant;
`invoker` invokes and reads its tenant's functions, pods and snapshots."""

import hashlib
import re
import secrets

import msgspec
import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.functions import TENANT_PATTERN
from thaw_core.store.replies import text

KEY_PREFIX = "thaw_"
ADMIN, INVOKER = "admin", "invoker"
ROLES = (ADMIN, INVOKER)


class Caller(msgspec.Struct, frozen=True):
    """An API key's record: `apikey:<sha256>` holds "tenant:role:rate"."""

    tenant: str
    role: str
    rate_per_s: float = 0.0  # 0: unlimited


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, r: redis.Redis):
        self._r = r

    async def create(self, tenant: str, role: str = ADMIN, rate_per_s: float = 0.0) -> str:
        """A new key for `tenant`. Raises ValueError for a name no function spec could carry
        (it would break every listing of that tenant's functions)."""
        if not re.fullmatch(TENANT_PATTERN, tenant):
            raise ValueError(f"tenant {tenant!r}: use 1-63 lowercase letters, digits, '-' or '_', starting with "
                             "a letter or digit (e.g. team-c)")
        if role not in ROLES:
            raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
        if not 0 <= rate_per_s <= 1_000_000:
            raise ValueError(f"rate {rate_per_s!r}: calls per second from 0 (unlimited) to 1000000")
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        await self._r.set(K.api_key(key_digest(key)), f"{tenant}:{role}:{rate_per_s:g}")
        return key

    async def caller(self, key: str) -> Caller | None:
        """Who a key speaks for, or None for a malformed or unknown key."""
        if not key.startswith(KEY_PREFIX) or len(key) > 256:
            return None
        value = await self._r.get(K.api_key(key_digest(key)))
        if value is None:
            return None
        tenant, _, rest = text(value).partition(":")
        role, _, rate = rest.partition(":")
        return Caller(tenant, role or ADMIN, float(rate or 0))

    async def tenant_of(self, key: str) -> str | None:
        found = await self.caller(key)
        return found.tenant if found else None
