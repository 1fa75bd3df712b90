"""The workload profile a fragmentation-aware policy measures against, and its memo table.

The index's `workload` if one was given (the trace replay gives the trace's, as the paper
does); otherwise one learned from the requests reserved on the index, rebuilt each time the
number seen doubles so the cost stays logarithmic in the number of reservations.  Thaw's
reweightings of it (per GPU, by supply) are applied here, once per table.
"""
from __future__ import annotations

from placement.engine.fragmentation import FragTable
from placement.engine.index import CapacityIndex
from placement.engine.model import PodRequest
from placement.engine.scarcity import supply_factors
from placement.engine.workload import WorkloadProfile


def frag_table(index: CapacityIndex, request: PodRequest, use_memory: bool,
               stranding: bool = False, per_gpu: bool = False,
               supply: bool = False) -> FragTable:
    """The memoised fragmentation table for this index's profile (see module docstring);
    `per_gpu`: multi-GPU shapes weigh their popularity per GPU (`weighted_per_gpu`);
    `supply`: and each shape times the fleet's GPUs over those that could hold it
    (`scarcity.supply_factors`)."""
    if index.workload is not None:
        key: tuple[object, ...] = ("frag", id(index.workload), use_memory, stranding, per_gpu, supply)
        cached = index.memo.get(key)
        if cached is None or cached[0] is not index.workload:
            profile = _weighted(index, index.workload, per_gpu, supply)
            cached = index.memo[key] = (index.workload, FragTable(profile, use_memory, stranding))
        return cached[1]
    seen = sum(index.seen.values())
    key = ("learned-frag", use_memory, stranding, per_gpu, supply)
    cached = index.memo.get(key)
    if cached is None or seen >= 2 * max(cached[0], 1):
        requests = list(index.seen.elements()) or [request]
        profile = _weighted(index, WorkloadProfile.from_requests(requests), per_gpu, supply)
        cached = index.memo[key] = (seen, FragTable(profile, use_memory, stranding))
    return cached[1]


def _weighted(index: CapacityIndex, profile: WorkloadProfile, per_gpu: bool,
              supply: bool) -> WorkloadProfile:
    if per_gpu:
        profile = profile.weighted_per_gpu()
    if supply:
        profile = profile.scaled(supply_factors(index, profile.pods))
    return profile
