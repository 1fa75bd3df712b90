"""The GPU/CPU/memory ledger: reserve a pod's resources and release them, each atomically.

Invariants the scripts keep (tests check them under load and faults):
per GPU, reserved vRAM <= capacity and reserved milli <= 1000; per node, reserved CPU and
memory <= capacity; a function never has more than max_pods live pods; a tenant never holds
more pods or vRAM than its quota (when it has one); a draining node (`thaw drain`) gets no
new pod. Release is idempotent: the reservation hash exists exactly while the pod holds
resources.
"""

from typing import NamedTuple

import msgspec
import redis.asyncio as redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from bus_schemas import redis_keys as K
from bus_schemas.encodings import gpu_indices, gpu_list
from bus_schemas.pods import INITIAL, TERMINAL, PodState, sources
from thaw_core.store.lua import state, state_set
from thaw_core.store.pods import Moved
from thaw_core.store.replies import text

# A reservation is written once and deleted once, so a second read always settles it.
_RELEASE_ATTEMPTS = 3

_RESERVE = f"""
local resv, podk, fnpods, allpods, nodek, usage, quota, drain = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6], KEYS[7], KEYS[8]
if redis.call('EXISTS', resv) == 1 then return 'exists' end
if redis.call('SCARD', fnpods) >= tonumber(ARGV[8]) then return 'max_pods' end
local total_vram = tonumber(ARGV[6]) * (#KEYS - 8)
local max_pods = tonumber(redis.call('HGET', quota, 'max_pods') or '-1')
if max_pods >= 0 and tonumber(redis.call('HGET', usage, 'pods') or '0') + 1 > max_pods then return 'quota_pods' end
local max_vram = tonumber(redis.call('HGET', quota, 'max_vram_mib') or '-1')
if max_vram >= 0 and tonumber(redis.call('HGET', usage, 'vram_mib') or '0') + total_vram > max_vram then
  return 'quota_vram'
end
local ncpu = tonumber(redis.call('HGET', nodek, 'cpu_milli') or '-1')
if ncpu < 0 then return 'no_node' end
if redis.call('HEXISTS', drain, 'draining_ms') == 1 then return 'node_draining' end
local cpu, mem = tonumber(ARGV[4]), tonumber(ARGV[5])
if tonumber(redis.call('HGET', nodek, 'cpu_reserved') or '0') + cpu > ncpu then return 'cpu' end
local nmem = tonumber(redis.call('HGET', nodek, 'memory_mib') or '0')
if tonumber(redis.call('HGET', nodek, 'memory_reserved') or '0') + mem > nmem then return 'memory' end
local vram, milli = tonumber(ARGV[6]), tonumber(ARGV[7])
for i = 9, #KEYS do
  local cap = tonumber(redis.call('HGET', KEYS[i], 'vram_mib') or '-1')
  if cap < 0 then return 'no_gpu' end
  if tonumber(redis.call('HGET', KEYS[i], 'vram_reserved') or '0') + vram > cap then return 'gpu_vram' end
  if tonumber(redis.call('HGET', KEYS[i], 'milli_reserved') or '0') + milli > 1000 then return 'gpu_milli' end
end
redis.call('HINCRBY', nodek, 'cpu_reserved', cpu)
redis.call('HINCRBY', nodek, 'memory_reserved', mem)
local version = redis.call('HINCRBY', nodek, 'version', 1)
redis.call('HINCRBY', usage, 'pods', 1)
redis.call('HINCRBY', usage, 'vram_mib', total_vram)
for i = 9, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'vram_reserved', vram)
  redis.call('HINCRBY', KEYS[i], 'milli_reserved', milli)
end
redis.call('HSET', resv, 'fn', ARGV[2], 'node', ARGV[3], 'cpu_milli', cpu, 'memory_mib', mem,
  'vram_mib', vram, 'gpu_milli', milli, 'gpus', ARGV[11], 'tenant', ARGV[13])
redis.call('DEL', podk)
redis.call('HSET', podk, 'fn', ARGV[2], 'node', ARGV[3], 'state', {state(INITIAL)}, 'seq', 1, 'state_at_ms', ARGV[10],
  'created_ms', ARGV[10], 'last_used_ms', ARGV[10], 'concurrency', ARGV[9], 'cpu_milli', cpu,
  'memory_mib', mem, 'vram_mib', vram, 'gpu_milli', milli, 'gpus', ARGV[11], 'snapshot', ARGV[12])
redis.call('SADD', fnpods, ARGV[1])
redis.call('SADD', allpods, ARGV[1])
return 'ok:' .. version
"""

# KEYS: the reservation, the pod, the failed-pods index, the function's and all pods' sets, the
# pod's leases, then (as the caller read from the reservation) the node, the tenant's usage and
# each GPU. A reservation that names other keys than those sent is left alone ('stale'), and
# the caller reads it again. Returns {released, seq, fn, node} (seq > 0: the pod moved).
_RELEASE = f"""
local resv, podk, failed, fnpods, allpods, leases, nodek, usage = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6], KEYS[7], KEYS[8]
local pod, final, reason, now, keep_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local released = 0
local r = redis.call('HGETALL', resv)
if #r > 0 then
  local t = {{}}
  for i = 1, #r, 2 do t[r[i]] = r[i + 1] end
  if t.node ~= ARGV[6] or t.gpus ~= ARGV[7] or (t.tenant or '') ~= ARGV[8] then return {{'stale', 0, '', ''}} end
  redis.call('HINCRBY', nodek, 'cpu_reserved', -tonumber(t.cpu_milli))
  redis.call('HINCRBY', nodek, 'memory_reserved', -tonumber(t.memory_mib))
  redis.call('HINCRBY', nodek, 'version', 1)
  local held = 0
  for i = 9, #KEYS do
    redis.call('HINCRBY', KEYS[i], 'vram_reserved', -tonumber(t.vram_mib))
    redis.call('HINCRBY', KEYS[i], 'milli_reserved', -tonumber(t.gpu_milli))
    held = held + tonumber(t.vram_mib)
  end
  if t.tenant then
    redis.call('HINCRBY', usage, 'pods', -1)
    redis.call('HINCRBY', usage, 'vram_mib', -held)
  end
  redis.call('DEL', resv)
  released = 1
end
local fn_node = redis.call('HMGET', podk, 'fn', 'node')
local st = redis.call('HGET', podk, 'state')
local ending = {state_set(sources(PodState.STOPPED) | sources(PodState.FAILED))}
local seq = 0
if st and ending[st] then
  redis.call('HSET', podk, 'state', final, 'state_at_ms', now, 'reason', reason)
  seq = redis.call('HINCRBY', podk, 'seq', 1)
  if final == {state(PodState.FAILED)} then
    redis.call('ZADD', failed, tonumber(now), pod)
    redis.call('ZREMRANGEBYSCORE', failed, '-inf', tonumber(now) - 1000 * keep_s)
  end
end
if fn_node[1] then redis.call('SREM', fnpods, pod) end
redis.call('SREM', allpods, pod)
redis.call('DEL', leases)
if st then redis.call('EXPIRE', podk, keep_s) end
return {{released, seq, fn_node[1] or '', fn_node[2] or ''}}
"""


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """What one pod asks the ledger for. Shares are per GPU; `gpus` are indices on `node`."""

    pod: str
    fn: str
    node: str
    gpus: tuple[int, ...]
    vram_mib: int
    gpu_milli: int
    cpu_milli: int
    memory_mib: int
    max_pods: int
    concurrency: int
    snapshot: str = ""
    tenant: str = "default"


def _reserve_call(res: Reservation, now_ms: int) -> tuple[list[str], list[EncodableT]]:
    """The reserve script's KEYS and ARGV for `res`."""
    keys = [K.reservation(res.pod), K.pod(res.pod), K.function_pods(res.fn), K.ALL_PODS, K.node(res.node),
            K.tenant_usage(res.tenant), K.tenant_quota(res.tenant), K.node_drain(res.node)]
    keys += [K.gpu(res.node, i) for i in res.gpus]
    args: list[EncodableT] = [res.pod, res.fn, res.node, res.cpu_milli, res.memory_mib, res.vram_mib,
                              res.gpu_milli, res.max_pods, res.concurrency, now_ms, gpu_list(res.gpus),
                              res.snapshot, res.tenant]
    return keys, args


class Commit(NamedTuple):
    """What the ledger answered one reservation: `reserve`'s outcome, and on 'ok' the node's
    version that commit left (0 otherwise)."""

    outcome: str
    node_version: int


def _commit(reply: object) -> Commit:
    """The reserve script's reply ('ok:<node version>' or a refusal) as a Commit."""
    outcome, _, version = text(reply).partition(":")
    return Commit(outcome, int(version or 0))


def first_state(res: Reservation, at_ms: int) -> Moved:
    """The transition a committed reservation made: the pod exists, in the machine's first state."""
    return Moved(pod=res.pod, to=INITIAL, applied=True, found="", seq=1, fn=res.fn, node=res.node, at_ms=at_ms)


class Ledger:
    def __init__(self, r: redis.Redis, history_s: int = 3600):
        self._r = r
        self._reserve = r.register_script(_RESERVE)
        self._release = r.register_script(_RELEASE)
        self._history_s = history_s

    async def reserve(self, res: Reservation, now_ms: int) -> str:
        """'ok' (or 'exists' on a repeat) when committed; else the reason it would over-commit:
        'max_pods', 'quota_pods', 'quota_vram', 'no_node', 'node_draining', 'cpu', 'memory', 'no_gpu',
        'gpu_vram', 'gpu_milli'. `res.max_pods` is the limit checked: a drain's replacement pods pass
        one past the function's max_pods when need be (placement/drain.py)."""
        return (await self._commit(res, now_ms)).outcome

    async def _commit(self, res: Reservation, now_ms: int) -> Commit:
        keys, args = _reserve_call(res, now_ms)
        return _commit(await self._reserve(keys=keys, args=args))

    async def reserve_many(self, reservations: list[Reservation], now_ms: int) -> list[Commit]:
        """`reserve` of each, in order, in one round trip: each is still its own atomic script,
        so each is committed or refused on its own."""
        if not reservations:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for res in reservations:
                keys, args = _reserve_call(res, now_ms)
                # not `self._reserve(..., client=pipe)`: a pipeline of scripts asks SCRIPT EXISTS
                # first, a round trip more and a command the roles are not granted
                pipe.evalsha(self._reserve.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        outcomes = []
        for res, reply in zip(reservations, replies):
            if isinstance(reply, NoScriptError):  # the server lost its scripts (a restart): nothing ran
                outcomes.append(await self._commit(res, now_ms))
            elif isinstance(reply, Exception):
                raise reply
            else:
                outcomes.append(_commit(reply))
        return outcomes

    async def release(self, pod: str, final: PodState, reason: str, now_ms: int) -> Moved:
        """Free what `pod` holds and mark it terminal (`final`: stopped or failed). `applied`
        when this call freed it; safe to repeat."""
        if final not in TERMINAL:
            raise ValueError(f"a released pod ends stopped or failed, not {final.value}")
        for _ in range(_RELEASE_ATTEMPTS):
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.hgetall(K.reservation(pod))
                pipe.hget(K.pod(pod), "fn")
                held, fn = await pipe.execute()
            node, gpus, tenant = held.get("node", ""), held.get("gpus", ""), held.get("tenant", "")
            keys = [K.reservation(pod), K.pod(pod), K.FAILED_PODS, K.function_pods(fn or ""), K.ALL_PODS,
                    K.pod_leases(pod), K.node(node), K.tenant_usage(tenant)]
            keys += [K.gpu(node, i) for i in gpu_indices(gpus)]
            released, seq, fn, node = await self._release(
                keys=keys, args=[pod, final.value, reason, now_ms, self._history_s, node, gpus, tenant])
            if released != "stale":
                return Moved(pod=pod, to=final, applied=bool(int(released)), found="", seq=int(seq), fn=fn,
                             node=node, at_ms=now_ms)
        raise RuntimeError(f"the reservation of pod {pod} kept changing while it was released")
