"""The workload profile a fragmentation-aware policy measures against, and its memo table.

The index's `workload` if one was given (the trace replay gives the trace's, as the paper
does); otherwise one learned from the requests reserved on the index, rebuilt each time the
number seen doubles so the cost stays logarithmic in the number of reservations.
"""
from __future__ import annotations

from placement.engine.fragmentation import FragTable
from placement.engine.index import CapacityIndex
from placement.engine.model import PodRequest
from placement.engine.workload import WorkloadProfile


def frag_table(index: CapacityIndex, request: PodRequest, use_memory: bool,
               stranding: bool = False) -> FragTable:
    """The memoised fragmentation table for this index's profile (see module docstring)."""
    if index.workload is not None:
        key = ("frag", id(index.workload), use_memory, stranding)
        table = index.memo.get(key)
        if table is None:
            table = index.memo[key] = FragTable(index.workload, use_memory, stranding)
        return table
    seen = sum(index.seen.values())
    key = ("learned-frag", use_memory, stranding)
    cached = index.memo.get(key)
    if cached is None or seen >= 2 * max(cached[0], 1):
        requests = list(index.seen.elements()) or [request]
        profile = WorkloadProfile.from_requests(requests)
        cached = index.memo[key] = (seen, FragTable(profile, use_memory, stranding))
    return cached[1]
