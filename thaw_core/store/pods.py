"""Pod records: read them, and move them between states with a compare-and-set."""

from dataclasses import dataclass

import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.pods import PodState

_TRANSITION = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == st then allowed = true end end
if not allowed then return {0, st} end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'state_at_ms', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return {1, st}
"""


@dataclass(frozen=True, slots=True)
class PodRecord:
    pod: str
    fn: str
    node: str
    state: PodState
    state_at_ms: int
    created_ms: int
    last_used_ms: int
    concurrency: int
    endpoint: str
    gpus: tuple[int, ...]
    vram_mib: int
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    runtime_ref: str
    snapshot: str
    reason: str

    @classmethod
    def from_hash(cls, pod: str, h: dict[str, str]) -> "PodRecord":
        return cls(
            pod=pod, fn=h.get("fn", ""), node=h.get("node", ""), state=PodState(h.get("state", "failed")),
            state_at_ms=int(h.get("state_at_ms", 0)), created_ms=int(h.get("created_ms", 0)),
            last_used_ms=int(h.get("last_used_ms", 0)), concurrency=int(h.get("concurrency", 1)),
            endpoint=h.get("endpoint", ""), gpus=tuple(int(x) for x in h.get("gpus", "").split(",") if x),
            vram_mib=int(h.get("vram_mib", 0)), gpu_milli=int(h.get("gpu_milli", 0)),
            cpu_milli=int(h.get("cpu_milli", 0)), memory_mib=int(h.get("memory_mib", 0)),
            runtime_ref=h.get("runtime_ref", ""), snapshot=h.get("snapshot", ""), reason=h.get("reason", ""),
        )


class Pods:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._transition = r.register_script(_TRANSITION)

    async def transition(self, pod: str, allowed: set[PodState] | frozenset[PodState], to: PodState,
                         now_ms: int, **fields: str | int) -> tuple[bool, str]:
        """Move `pod` to `to` if it is in one of `allowed`. Returns (applied, state found)."""
        args = [",".join(s.value for s in allowed), to.value, now_ms]
        for k, v in fields.items():
            args += [k, v]
        applied, found = await self._transition(keys=[K.pod(pod)], args=args)
        return bool(applied), found

    async def get(self, pod: str) -> PodRecord | None:
        h = await self._r.hgetall(K.pod(pod))
        return PodRecord.from_hash(pod, h) if h else None

    async def live_ids(self, fn: str | None = None) -> list[str]:
        key = K.function_pods(fn) if fn else K.ALL_PODS
        return sorted(await self._r.smembers(key))

    async def live(self, fn: str | None = None) -> list[PodRecord]:
        """Every non-terminal pod (of `fn`), read in one round trip."""
        return await self._records(await self.live_ids(fn))

    async def recent_failures(self, since_ms: int) -> list[PodRecord]:
        """Pods that failed since `since_ms`, newest first, with their reasons (`Ledger.release`
        indexes them)."""
        return await self._records(list(reversed(await self._r.zrangebyscore(K.FAILED_PODS, since_ms, "+inf"))))

    async def _records(self, ids: list[str]) -> list[PodRecord]:
        """The records of `ids` that still exist, in that order, read in one round trip."""
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for pod in ids:
                pipe.hgetall(K.pod(pod))
            hashes = await pipe.execute()
        return [PodRecord.from_hash(pod, h) for pod, h in zip(ids, hashes) if h]

    async def set_fields(self, pod: str, **fields: str | int) -> None:
        await self._r.hset(K.pod(pod), mapping=fields)
