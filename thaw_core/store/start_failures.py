"""Consecutive failed starts of a function's pods: the crash-loop record behind placement's
backoff and a function's `degraded` status.

Agents write it (a pod that failed before it was ever healthy adds one; a pod that became
healthy clears it); placement reads it before it starts a pod; the gateway reads it to say why
calls get no worker. It lives in Redis, so a restarted placement worker keeps backing off.
It counts for one spec only (its digest): a redeployed function starts afresh.
"""

from dataclasses import dataclass

import redis.asyncio as redis

from bus_schemas import redis_keys as K
from thaw_core.store.replies import text_hash

DEGRADED_AFTER = 5  # consecutive failed starts that mark a function degraded
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 60.0

_RECORD = """
if redis.call('HGET', KEYS[1], 'digest') ~= ARGV[1] then redis.call('DEL', KEYS[1]) end
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'digest', ARGV[1], 'last_ms', ARGV[2], 'reason', ARGV[3])
return n
"""
_CLEAR = """
if redis.call('HGET', KEYS[1], 'digest') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class StartFailures:
    fn: str
    failures: int
    last_ms: int
    reason: str
    digest: str  # the spec the failures were counted for


def delay_s(failures: int) -> float:
    """How long after the last of `failures` consecutive failed starts the next pod may start:
    1 s, 2 s, 4 s ... capped at MAX_DELAY_S; 0 with no failures."""
    if failures <= 0:
        return 0.0
    return float(min(FIRST_DELAY_S * 2.0 ** min(failures - 1, 30), MAX_DELAY_S))


def wait_left_s(record: StartFailures | None, digest: str, now_ms: int) -> float:
    """Seconds until a new pod of the spec with `digest` may start (0: now). A record of
    another spec (the function was redeployed since) holds nothing back."""
    if record is None or record.digest != digest:
        return 0.0
    return max(0.0, record.last_ms / 1000 + delay_s(record.failures) - now_ms / 1000)


def degraded_reason(record: StartFailures | None, digest: str) -> str:
    """Why the function counts as degraded for its crash loop, "" when it does not."""
    if record is None or record.digest != digest or record.failures < DEGRADED_AFTER:
        return ""
    return f"crash loop: {record.failures} pods in a row failed to start; last: {record.reason}"


class StartFailureLog:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._record = r.register_script(_RECORD)
        self._clear = r.register_script(_CLEAR)

    async def record(self, fn: str, digest: str, reason: str, now_ms: int) -> int:
        """One more failed start of `fn` (spec `digest`); returns how many in a row."""
        return int(await self._record(keys=[K.start_failures(fn)], args=[digest, now_ms, reason[:4000]]))

    async def clear(self, fn: str, digest: str) -> None:
        """A pod of `fn` became healthy: the loop is over (for that spec)."""
        await self._clear(keys=[K.start_failures(fn)], args=[digest])

    async def get(self, fn: str) -> StartFailures | None:
        return _failures_of(fn, text_hash(await self._r.hgetall(K.start_failures(fn))))

    async def get_many(self, fns: list[str]) -> dict[str, StartFailures | None]:
        """`get` of each of `fns`: one EXISTS over them all, then their records only if one has
        any. Few functions have one, and a lease batch's HGETALL each cost placement ~25 us of
        redis-py apiece (bench/fleet_replay.py)."""
        if not fns or not await self._r.exists(*(K.start_failures(fn) for fn in fns)):
            return dict.fromkeys(fns)
        async with self._r.pipeline(transaction=False) as pipe:
            for fn in fns:
                pipe.hgetall(K.start_failures(fn))
            hashes = await pipe.execute()
        return {fn: _failures_of(fn, text_hash(h)) for fn, h in zip(fns, hashes)}


def _failures_of(fn: str, h: dict[str, str]) -> StartFailures | None:
    if not h:
        return None
    return StartFailures(fn=fn, failures=int(h.get("failures", 0)), last_ms=int(h.get("last_ms", 0)),
                         reason=h.get("reason", ""), digest=h.get("digest", ""))
