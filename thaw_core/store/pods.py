"""The pod aggregate: `PodRecord` is its fields, `Pods` the only code that reads or moves it.

A pod changes state only by a compare-and-set (`Pods.move`) whose allowed states come from the
state machine in bus_schemas.pods, and every change bumps the pod's `seq`, so the `pod.state`
events published for it (thaw_core.pod_states) can be put in order by any reader.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
import redis.asyncio as redis
from redis.typing import EncodableT

from bus_schemas import redis_keys as K
from bus_schemas.encodings import gpu_indices
from bus_schemas.pods import PodState, sources
from thaw_core.store.bulk import BulkReads
from thaw_core.store.replies import Fields, text_hash, texts

_MOVE = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {0, '', 0, '', ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == st then allowed = true end end
if not allowed then return {0, st, 0, '', ''} end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'state_at_ms', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local fn_node = redis.call('HMGET', KEYS[1], 'fn', 'node')
return {1, st, seq, fn_node[1] or '', fn_node[2] or ''}
"""


class PodRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A pod's hash (redis_keys.pod), typed. Written by the ledger's reserve (its first state
    and resources), by `Pods.move` and `Pods.set_fields`, and by the lease scripts
    (busy/idle, last_used_ms, lease_seq)."""

    pod: str
    fn: str = ""
    node: str = ""
    state: PodState = PodState.FAILED
    seq: int = 0  # transitions so far; the `seq` of the pod's latest pod.state event
    state_at_ms: int = 0
    created_ms: int = 0
    last_used_ms: int = 0
    concurrency: int = 1
    endpoint: str = ""
    gpus: tuple[int, ...] = ()
    vram_mib: int = 0
    gpu_milli: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    runtime_ref: str = ""  # "pid:starttime" of a process worker, a container id
    snapshot: str = ""  # the snapshot placement named for it ("" for a cold start)
    restored_from: str = ""
    log: str = ""  # the worker's log file on its node
    reason: str = ""

    @classmethod
    def from_hash(cls, pod: str, h: dict[str, str]) -> "PodRecord":
        known = {k: v for k, v in h.items() if k in cls.__struct_fields__ and k != "gpus"}
        return msgspec.convert({**known, "pod": pod, "gpus": gpu_indices(h.get("gpus", ""))}, cls, strict=False)


# Fields a caller may set beside a state change: the rest belong to the ledger and the leases.
SETTABLE = frozenset({"endpoint", "last_used_ms", "runtime_ref", "restored_from", "log", "reason"})


@dataclass(frozen=True, slots=True)
class Moved:
    """What a compare-and-set found and did. With `applied`, the pod is now in `to`, this was
    its `seq`-th transition, and its pod.state event is owed."""

    pod: str
    to: PodState
    applied: bool
    found: str  # the state before ("" if the pod is gone)
    seq: int = 0
    fn: str = ""
    node: str = ""
    at_ms: int = 0
    endpoint: str = ""  # a serving pod's, on the busy/idle moves the leases make


class Pods:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._move = r.register_script(_MOVE)
        self._bulk = BulkReads(r)

    async def move(self, pod: str, to: PodState, now_ms: int, only_from: frozenset[PodState] | None = None,
                   **fields: str | int) -> Moved:
        """Move `pod` to `to` if the state machine allows it from the pod's state (and, with
        `only_from`, that state is one of those). `fields` are set with it."""
        _check_settable(fields)
        allowed = sources(to, only_from)
        args: list[str | int] = [",".join(sorted(s.value for s in allowed)), to.value, now_ms]
        for k, v in fields.items():
            args += [k, v]
        applied, found, seq, fn, node = await self._move(keys=[K.pod(pod)], args=args)
        return Moved(pod=pod, to=to, applied=bool(applied), found=found, seq=int(seq), fn=fn, node=node,
                     at_ms=now_ms)

    async def get(self, pod: str) -> PodRecord | None:
        h = text_hash(await self._r.hgetall(K.pod(pod)))
        return PodRecord.from_hash(pod, h) if h else None

    async def live_ids(self, fn: str | None = None) -> list[str]:
        key = K.function_pods(fn) if fn else K.ALL_PODS
        return sorted(texts(await self._r.smembers(key)))

    async def live(self, fn: str | None = None) -> list[PodRecord]:
        """Every non-terminal pod (of `fn`), read in one round trip."""
        return await self._records(await self.live_ids(fn))

    async def live_by_function(self, fns: list[str]) -> dict[str, list[PodRecord]]:
        """`live` of each of `fns`, by two commands (thaw_core/store/bulk.py: placement's role only)."""
        members = [sorted(ids) for ids in await self._bulk.members([K.function_pods(fn) for fn in fns])]
        found = {p.pod: p for p in await self.get_many([pod for ids in members for pod in ids])}
        return {fn: [found[pod] for pod in ids if pod in found] for fn, ids in zip(fns, members)}

    async def get_many(self, ids: list[str]) -> list[PodRecord]:
        """The records of `ids` that still exist, in that order, read by one command each
        2,000 pods (thaw_core/store/bulk.py: placement's role only)."""
        hashes = await self._bulk.hashes([K.pod(pod) for pod in ids])
        return [PodRecord.from_hash(pod, h) for pod, h in zip(ids, hashes) if h]

    async def recent_failures(self, since_ms: int) -> list[PodRecord]:
        """Pods that failed since `since_ms`, newest first, with their reasons (`Ledger.release`
        indexes them)."""
        failed = texts(await self._r.zrangebyscore(K.FAILED_PODS, since_ms, "+inf"))
        return await self._records(list(reversed(failed)))

    async def _records(self, ids: list[str]) -> list[PodRecord]:
        """The records of `ids` that still exist, in that order, read in one round trip."""
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for pod in ids:
                pipe.hgetall(K.pod(pod))
            hashes = await pipe.execute()
        return [PodRecord.from_hash(pod, text_hash(h)) for pod, h in zip(ids, hashes) if h]

    async def set_fields(self, pod: str, **fields: EncodableT) -> None:
        """Facts about a pod that are not its state (its worker's ref, what it was restored
        from). A pod that is gone stays gone."""
        _check_settable(fields)
        if fields:
            mapping: Fields = {k: v for k, v in fields.items()}
            await self._r.hset(K.pod(pod), mapping=mapping)


def _check_settable(fields: Mapping[str, object]) -> None:
    other = set(fields) - SETTABLE
    if other:
        raise ValueError(f"pod fields {sorted(other)} are not settable here: the state machine, the ledger "
                         "and the leases own them")
