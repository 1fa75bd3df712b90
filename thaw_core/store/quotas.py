"""Per-tenant quotas: the most pods and vRAM a tenant may hold, set by an operator and enforced by
the ledger's reserve script (thaw_core/store/ledger.py), which also keeps each tenant's usage."""

from dataclasses import dataclass

import redis.asyncio as redis

from bus_schemas import redis_keys as K
from thaw_core.store.replies import text_hash

QUOTA_OUTCOMES = {"quota_pods": "the tenant holds its most pods", "quota_vram": "the tenant holds its most vRAM"}


@dataclass(frozen=True, slots=True)
class Quota:
    max_pods: int | None  # None: unlimited
    max_vram_mib: int | None
    pods: int  # held now
    vram_mib: int


class Quotas:
    def __init__(self, r: redis.Redis):
        self._r = r

    async def set(self, tenant: str, max_pods: int | None, max_vram_mib: int | None) -> None:
        """Set or clear (None) each limit. Raises ValueError for a negative one."""
        for name, value in (("max_pods", max_pods), ("max_vram_mib", max_vram_mib)):
            if value is not None and value < 0:
                raise ValueError(f"{name} {value}: use 0 or more, or leave it out for no limit")
        async with self._r.pipeline(transaction=True) as pipe:
            for name, value in (("max_pods", max_pods), ("max_vram_mib", max_vram_mib)):
                if value is None:
                    pipe.hdel(K.tenant_quota(tenant), name)
                else:
                    pipe.hset(K.tenant_quota(tenant), name, value)
            await pipe.execute()

    async def get(self, tenant: str) -> Quota:
        limits = text_hash(await self._r.hgetall(K.tenant_quota(tenant)))
        held = text_hash(await self._r.hgetall(K.tenant_usage(tenant)))
        return Quota(max_pods=_int(limits.get("max_pods")), max_vram_mib=_int(limits.get("max_vram_mib")),
                     pods=int(held.get("pods", 0)), vram_mib=int(held.get("vram_mib", 0)))

    async def describe(self, tenant: str) -> str:
        q = await self.get(tenant)
        return (f"{q.pods} of {_limit(q.max_pods)} pods, {q.vram_mib} of {_limit(q.max_vram_mib)} MiB vRAM; "
                "an operator raises it with `thaw quota`")


def _int(raw: str | None) -> int | None:
    return int(raw) if raw is not None else None


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)
