"""Worker leases: a gateway claims request slots on serving pods, each slot with a TTL.

A pod serves at most `concurrency` requests at once, so it has that many slots. A gateway
leases slots in bulk and reuses them for many calls ("lease once, serve many"): the hot path
touches Redis only when it needs more slots, renews them (every TTL/3), or gives them back.
A gateway that dies stops renewing, so its slots expire and the pod returns to idle within the
TTL. Slots are members of a sorted set scored by expiry; expired members are purged first in
every script, so no stale slot ever counts against the concurrency limit.

A pod's first slot makes it busy and its last one idle again: those are state transitions like
any other (seq bumped, allowed by bus_schemas.pods), returned as `Moved` so the caller
publishes their pod.state events (thaw_core.pod_states).
"""

from dataclasses import dataclass

import msgspec
import redis.asyncio as redis

from bus_schemas import redis_keys as K
from bus_schemas.pods import PodState, sources
from thaw_core.store.lua import state, state_set
from thaw_core.store.pods import Moved
from thaw_core.store.replies import texts

# Busy -> idle once no live slot is left: the tail of release and sweep. Returns the new seq,
# or 0 if the pod stayed as it was.
_IDLE_WHEN_EMPTY = f"""
local function idle_when_empty(lk, pk, now)
  if redis.call('ZCARD', lk) > 0 or redis.call('HGET', pk, 'state') ~= {state(PodState.BUSY)} then return 0 end
  redis.call('HSET', pk, 'state', {state(PodState.IDLE)}, 'state_at_ms', now)
  return redis.call('HINCRBY', pk, 'seq', 1)
end
"""

# KEYS: pod hash, pod leases, for each candidate pod. Returns {slots, flips}: slots flat
# (pod, endpoint, member), flips flat (pod, seq, fn, node, endpoint) for pods this made busy.
_ACQUIRE = f"""
local want, expiry, now, holder = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local leasable = {state_set(sources(PodState.BUSY) | {PodState.BUSY})}
local slots, flips = {{}}, {{}}
for i = 1, #KEYS, 2 do
  if want <= 0 then break end
  local pk, lk, p = KEYS[i], KEYS[i + 1], ARGV[4 + (i + 1) / 2]
  local st = redis.call('HGET', pk, 'state')
  if st and leasable[st] then
    redis.call('ZREMRANGEBYSCORE', lk, '-inf', now)
    local free = tonumber(redis.call('HGET', pk, 'concurrency') or '1') - redis.call('ZCARD', lk)
    local take = math.min(free, want)
    if take > 0 then
      local seq = redis.call('HINCRBY', pk, 'lease_seq', take)
      local ep = redis.call('HGET', pk, 'endpoint')
      for j = 1, take do
        local m = holder .. ':' .. (seq - take + j)
        redis.call('ZADD', lk, expiry, m)
        table.insert(slots, p); table.insert(slots, ep); table.insert(slots, m)
      end
      want = want - take
      redis.call('HSET', pk, 'last_used_ms', now)
      if st ~= {state(PodState.BUSY)} then
        redis.call('HSET', pk, 'state', {state(PodState.BUSY)}, 'state_at_ms', now)
        local fn_node = redis.call('HMGET', pk, 'fn', 'node')
        table.insert(flips, p); table.insert(flips, redis.call('HINCRBY', pk, 'seq', 1))
        table.insert(flips, fn_node[1] or ''); table.insert(flips, fn_node[2] or ''); table.insert(flips, ep or '')
      end
    end
  end
end
return {{slots, flips}}
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

# Returns {seq, fn, node, endpoint}: seq > 0 when the pod went idle.
_RELEASE = _IDLE_WHEN_EMPTY + """
local lk, pk = KEYS[1], KEYS[2]
for i = 2, #ARGV do redis.call('ZREM', lk, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', lk, '-inf', ARGV[1])
if redis.call('EXISTS', pk) == 0 then return {0, '', '', ''} end
redis.call('HSET', pk, 'last_used_ms', ARGV[1])
local seq = idle_when_empty(lk, pk, ARGV[1])
local fn_node = redis.call('HMGET', pk, 'fn', 'node', 'endpoint')
return {seq, fn_node[1] or '', fn_node[2] or '', fn_node[3] or ''}
"""

# Housekeeping: purge expired slots; a busy pod with none left is idle again.
# Returns {live slots, seq (> 0 when it went idle), fn, node, endpoint}.
_SWEEP = _IDLE_WHEN_EMPTY + """
local lk, pk = KEYS[1], KEYS[2]
redis.call('ZREMRANGEBYSCORE', lk, '-inf', ARGV[1])
if redis.call('EXISTS', pk) == 0 then return {0, 0, '', '', ''} end
local seq = idle_when_empty(lk, pk, ARGV[1])
local fn_node = redis.call('HMGET', pk, 'fn', 'node', 'endpoint')
return {redis.call('ZCARD', lk), seq, fn_node[1] or '', fn_node[2] or '', fn_node[3] or ''}
"""

# Scale-down: only an unleased serving pod, unused since `cutoff`, may start draining. A retire
# (ARGV[4] = '1': a drained node's pod whose replacement serves) takes it leased or not.
# Returns {applied, state found, seq, fn, node}.
_BEGIN_DRAIN = f"""
local lk, pk = KEYS[1], KEYS[2]
redis.call('ZREMRANGEBYSCORE', lk, '-inf', ARGV[2])
local st = redis.call('HGET', pk, 'state')
if not st then return {{0, '', 0, '', ''}} end
if ARGV[4] ~= '1' and redis.call('ZCARD', lk) > 0 then return {{0, st, 0, '', ''}} end
local drainable = {state_set(sources(PodState.DRAINING, frozenset({PodState.IDLE, PodState.BUSY})))}
if not drainable[st] then return {{0, st, 0, '', ''}} end
if tonumber(redis.call('HGET', pk, 'last_used_ms') or '0') > tonumber(ARGV[1]) then return {{0, st, 0, '', ''}} end
redis.call('HSET', pk, 'state', {state(PodState.DRAINING)}, 'state_at_ms', ARGV[2], 'reason', ARGV[3])
local fn_node = redis.call('HMGET', pk, 'fn', 'node')
return {{1, st, redis.call('HINCRBY', pk, 'seq', 1), fn_node[1] or '', fn_node[2] or ''}}
"""


class Slot(msgspec.Struct, frozen=True):
    """One leased request slot of a pod: `member` in its `pod_leases` sorted set."""

    pod: str
    endpoint: str
    member: str


@dataclass(frozen=True, slots=True)
class Leased:
    slots: list[Slot]
    became_busy: list[Moved]  # pods whose first slot this was


class Leases:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._acquire = r.register_script(_ACQUIRE)
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)
        self._sweep = r.register_script(_SWEEP)
        self._drain = r.register_script(_BEGIN_DRAIN)

    async def acquire(self, fn: str, want: int, holder: str, ttl_ms: int, now_ms: int) -> Leased:
        """Up to `want` free slots on serving pods of `fn`, leased to `holder` until now+ttl.
        A pod that joins `fn` between the two round trips is seen by the next acquire."""
        pods = sorted(texts(await self._r.smembers(K.function_pods(fn))))
        if not pods:
            return Leased([], [])
        keys = [k for p in pods for k in (K.pod(p), K.pod_leases(p))]
        slots, flips = await self._acquire(keys=keys, args=[want, now_ms + ttl_ms, now_ms, holder, *pods])
        return Leased([Slot(*slots[i:i + 3]) for i in range(0, len(slots), 3)],
                      [Moved(pod=flips[i], to=PodState.BUSY, applied=True, found=PodState.IDLE.value,
                             seq=int(flips[i + 1]), fn=flips[i + 2], node=flips[i + 3], endpoint=flips[i + 4],
                             at_ms=now_ms)
                       for i in range(0, len(flips), 5)])

    async def renew(self, pod: str, members: list[str], ttl_ms: int, now_ms: int, used: bool) -> list[str]:
        """Extend the given slots; returns the members that had already expired (now lost)."""
        args = [now_ms + ttl_ms, now_ms, "1" if used else "0", *members]
        return list(await self._renew(keys=[K.pod_leases(pod), K.pod(pod)], args=args))

    async def release(self, pod: str, members: list[str], now_ms: int) -> Moved | None:
        """Give the slots back; the pod's move to idle when they were its last, else None."""
        seq, fn, node, endpoint = await self._release(keys=[K.pod_leases(pod), K.pod(pod)], args=[now_ms, *members])
        return _went_idle(pod, int(seq), fn, node, endpoint, now_ms)

    async def sweep(self, pod: str, now_ms: int) -> Moved | None:
        """Purge expired slots of `pod`; its move to idle when none is left, else None."""
        _, seq, fn, node, endpoint = await self._sweep(keys=[K.pod_leases(pod), K.pod(pod)], args=[now_ms])
        return _went_idle(pod, int(seq), fn, node, endpoint, now_ms)

    async def begin_drain(self, pod: str, unused_since_ms: int, now_ms: int, reason: str) -> Moved:
        return await self._begin_drain(pod, unused_since_ms, now_ms, reason, retire=False)

    async def retire(self, pod: str, now_ms: int, reason: str) -> Moved:
        """Take a serving pod out of service even while callers hold slots on it (a drained
        node's pod once its replacement serves): no slot is leased on it any more, gateways give
        theirs back as their calls end (on its pod.state event), and it is stopped once `in_use`
        is 0. Applied only from idle or busy."""
        # however recently used: another host's clock may be ahead of ours
        return await self._begin_drain(pod, 2**53, now_ms, reason, retire=True)

    async def in_use(self, pod: str, now_ms: int) -> int:
        """How many of `pod`'s slots are leased and unexpired."""
        return int(await self._r.zcount(K.pod_leases(pod), now_ms, "+inf"))

    async def _begin_drain(self, pod: str, unused_since_ms: int, now_ms: int, reason: str, retire: bool) -> Moved:
        applied, found, seq, fn, node = await self._drain(keys=[K.pod_leases(pod), K.pod(pod)],
                                                          args=[unused_since_ms, now_ms, reason, "1" if retire else "0"])
        return Moved(pod=pod, to=PodState.DRAINING, applied=bool(applied), found=found, seq=int(seq), fn=fn,
                     node=node, at_ms=now_ms)


def _went_idle(pod: str, seq: int, fn: str, node: str, endpoint: str, now_ms: int) -> Moved | None:
    if seq <= 0:
        return None
    return Moved(pod=pod, to=PodState.IDLE, applied=True, found=PodState.BUSY.value, seq=seq, fn=fn, node=node,
                 endpoint=endpoint,
                 at_ms=now_ms)
