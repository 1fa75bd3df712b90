"""What a fleet replay measures, read from the store (the committed state, not the bus)."""

import asyncio
import os
from collections import defaultdict
from pathlib import Path
from dataclasses import dataclass

import redis.asyncio as redis

from nats.js import JetStreamContext

from bus_schemas import streams
from thaw_core.store.functions import Functions
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods
from placement.engine.model import GPU_MILLI, PodRequest


@dataclass(frozen=True, slots=True)
class Committed:
    """The store after a run: GPU milli each function's pod holds, and the fleet's totals."""

    milli_by_fn: dict[str, int]  # functions with a live pod -> the GPU milli it reserves
    where_by_fn: dict[str, tuple[str, tuple[int, ...]]]  # ... -> its node and GPUs
    reserved_milli: int  # summed over every GPU's ledger counter
    capacity_milli: int

    @property
    def allocation_pct(self) -> float:
        return 100 * self.reserved_milli / self.capacity_milli


async def committed(store: redis.Redis) -> Committed:
    nodes = await Nodes(store).all()
    pods = await Pods(store).live()
    return Committed(milli_by_fn={p.fn: p.gpu_milli * len(p.gpus) for p in pods},
                     where_by_fn={p.fn: (p.node, tuple(p.gpus)) for p in pods},
                     reserved_milli=sum(g.milli_reserved for n in nodes for g in n.gpus),
                     capacity_milli=sum(len(n.gpus) for n in nodes) * GPU_MILLI)


def level_allocation(requests: list[PodRequest], names: list[str], state: Committed) -> dict[int, float]:
    """Allocation % by arrived level, as bench/tracesim/replay.py computes it, from the committed
    state: requests taken in publish order, each adding what its function's pod holds. With one
    worker, publish order is decision order; with several it is their interleaving, approximately."""
    arrived = allocated = 0
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    for request, fn in zip(requests, names, strict=True):
        arrived += request.gpu_milli_total
        allocated += state.milli_by_fn.get(fn, 0)
        level = round(100 * arrived / state.capacity_milli)
        sums[level] += 100 * allocated / state.capacity_milli
        counts[level] += 1
    return {lv: sums[lv] / counts[lv] for lv in sorted(sums)}


async def unanswered(store: redis.Redis, names: list[str], state: Committed, since_ms: int,
                     parallel: int = 64) -> list[str]:
    """Functions with neither a pod nor an unplaceable record made since `since_ms`."""
    functions = Functions(store)
    waiting = [n for n in names if n not in state.milli_by_fn]
    out = []
    for at in range(0, len(waiting), parallel):
        chunk = waiting[at:at + parallel]
        whys = await asyncio.gather(*(functions.unplaceable(n, since_ms) for n in chunk))
        out += [n for n, why in zip(chunk, whys) if not why]
    return out


async def lease_backlog(js: JetStreamContext) -> int:
    """Lease requests the placement workers have not settled yet (pending plus unacked)."""
    info = await js.consumer_info(streams.PLACEMENT_LEASES.stream, streams.PLACEMENT_LEASES.durable)
    return info.num_pending + info.num_ack_pending



def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (Linux /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_group(pids: dict[str, list[int]]) -> dict[str, float]:
    """Group -> CPU seconds its processes have used so far."""
    return {group: sum(cpu_seconds(p) for p in members) for group, members in pids.items()}
