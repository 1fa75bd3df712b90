"""Worker leases: a gateway claims request slots on serving pods, each slot with a TTL.

A pod serves at most `concurrency` requests at once, so it has that many slots. A gateway
leases slots in bulk and reuses them for many calls ("lease once, serve many"): the hot path
touches Redis only when it needs more slots, renews them (every TTL/3), or gives them back.
A gateway that dies stops renewing, so its slots expire and the pod returns to idle within the
TTL. Slots are members of a sorted set scored by expiry; expired members are purged first in
every script, so no stale slot ever counts against the concurrency limit.
"""

from dataclasses import dataclass

import redis.asyncio as redis

from bus_schemas import redis_keys as K

_ACQUIRE = """
local prefix, want, expiry, now, holder = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local out = {}
for _, p in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if want <= 0 then break end
  local pk = prefix .. 'pod:' .. p
  local st = redis.call('HGET', pk, 'state')
  if st == 'idle' or st == 'busy' then
    local lk = pk .. ':leases'
    redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
    local free = tonumber(redis.call('HGET', pk, 'concurrency') or '1') - redis.call('ZCARD', lk)
    local take = math.min(free, want)
    if take > 0 then
      local seq = redis.call('HINCRBY', pk, 'lease_seq', take)
      local ep = redis.call('HGET', pk, 'endpoint')
      for i = 1, take do
        local m = holder .. ':' .. (seq - take + i)
        redis.call('ZADD', lk, expiry, m)
        table.insert(out, p); table.insert(out, ep); table.insert(out, m)
      end
      want = want - take
      redis.call('HSET', pk, 'state', 'busy', 'last_used_ms', now)
    end
  end
end
return out
"""

_RENEW = """
local lk, pk = KEYS[1], KEYS[2]
redis.call('ZREMRANGEBYSCORE', lk, '-inf', ARGV[2])
local lost = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', lk, ARGV[i]) then redis.call('ZADD', lk, 'XX', ARGV[1], ARGV[i])
  else table.insert(lost, ARGV[i]) end
end
if ARGV[3] == '1' and redis.call('EXISTS', pk) == 1 then redis.call('HSET', pk, 'last_used_ms', ARGV[2]) end
return lost
"""

_RELEASE = """
local lk, pk = KEYS[1], KEYS[2]
for i = 2, #ARGV do redis.call('ZREM', lk, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', lk, '-inf', ARGV[1])
if redis.call('EXISTS', pk) == 0 then return 0 end
redis.call('HSET', pk, 'last_used_ms', ARGV[1])
if redis.call('ZCARD', lk) == 0 and redis.call('HGET', pk, 'state') == 'busy' then
  redis.call('HSET', pk, 'state', 'idle', 'state_at_ms', ARGV[1])
end
return 1
"""

# Housekeeping: purge expired slots; a busy pod with none left is idle again.
_SWEEP = """
local lk, pk = KEYS[1], KEYS[2]
redis.call('ZREMRANGEBYSCORE', lk, '-inf', ARGV[1])
local n = redis.call('ZCARD', lk)
if n == 0 and redis.call('HGET', pk, 'state') == 'busy' then
  redis.call('HSET', pk, 'state', 'idle', 'state_at_ms', ARGV[1])
  return -1
end
return n
"""

# Scale-down: only an unleased serving pod, unused since `cutoff`, may start draining.
_BEGIN_DRAIN = """
local lk, pk = KEYS[1], KEYS[2]
redis.call('ZREMRANGEBYSCORE', lk, '-inf', ARGV[2])
if redis.call('ZCARD', lk) > 0 then return 0 end
local st = redis.call('HGET', pk, 'state')
if st ~= 'idle' and st ~= 'busy' and st ~= 'standby' then return 0 end
if tonumber(redis.call('HGET', pk, 'last_used_ms') or '0') > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', pk, 'state', 'draining', 'state_at_ms', ARGV[2], 'reason', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Slot:
    pod: str
    endpoint: str
    member: str


class Leases:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._acquire = r.register_script(_ACQUIRE)
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)
        self._sweep = r.register_script(_SWEEP)
        self._drain = r.register_script(_BEGIN_DRAIN)

    async def acquire(self, fn: str, want: int, holder: str, ttl_ms: int, now_ms: int) -> list[Slot]:
        """Up to `want` free slots on serving pods of `fn`, leased to `holder` until now+ttl."""
        flat = await self._acquire(keys=[K.function_pods(fn)],
                                   args=[K.PREFIX, want, now_ms + ttl_ms, now_ms, holder])
        return [Slot(*flat[i:i + 3]) for i in range(0, len(flat), 3)]

    async def renew(self, pod: str, members: list[str], ttl_ms: int, now_ms: int, used: bool) -> list[str]:
        """Extend the given slots; returns the members that had already expired (now lost)."""
        args = [now_ms + ttl_ms, now_ms, "1" if used else "0", *members]
        return list(await self._renew(keys=[K.pod_leases(pod), K.pod(pod)], args=args))

    async def release(self, pod: str, members: list[str], now_ms: int) -> None:
        await self._release(keys=[K.pod_leases(pod), K.pod(pod)], args=[now_ms, *members])

    async def sweep(self, pod: str, now_ms: int) -> int:
        """Purge expired slots of `pod`; returns live slots, or -1 if the pod just became idle."""
        return int(await self._sweep(keys=[K.pod_leases(pod), K.pod(pod)], args=[now_ms]))

    async def begin_drain(self, pod: str, unused_since_ms: int, now_ms: int, reason: str) -> bool:
        args = [unused_since_ms, now_ms, reason]
        return bool(await self._drain(keys=[K.pod_leases(pod), K.pod(pod)], args=args))

    async def held(self, pod: str, now_ms: int) -> int:
        return int(await self._r.zcount(K.pod_leases(pod), now_ms + 1, "+inf"))
