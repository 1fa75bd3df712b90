"""One trace replay: place a run's requests in order, no departures, record the allocation.

The allocation ratio is allocated GPU milli over the cluster's GPU milli.  After each pod the
pair (arrived %, allocated %) is recorded; the ratio at arrived level L is the mean over the
pods whose arrived % rounds to L (the paper's analysis), so the level-130 figure is the
allocation as the last pods arrive.
"""
from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import dataclass

from placement.engine import CapacityIndex, NodeView, PodRequest, WorkloadProfile, decide
from placement.engine.model import Placed


@dataclass(frozen=True, slots=True)
class RunResult:
    """Allocation % by arrived level (0..arrival), plus counts and decision time."""

    levels: dict[int, float]
    placed: int
    failed: int
    decide_s: float

    @property
    def final(self) -> float:
        return self.levels[max(self.levels)]


def replay(nodes: list[NodeView], requests: list[PodRequest], policy: str,
           profile: WorkloadProfile | None, tie_seed: int | None) -> RunResult:
    """Place `requests` in order with `policy` on a fresh index over `nodes`."""
    index = CapacityIndex(nodes, workload=profile)
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    rng = random.Random(tie_seed) if tie_seed is not None else None
    arrived = allocated = placed = failed = 0
    sums: dict[int, float] = defaultdict(float)
    counts: dict[int, int] = defaultdict(int)
    spent = 0.0
    for request in requests:
        arrived += request.gpu_milli_total
        start = time.process_time()
        decision = decide(index, request, policy, rng)
        spent += time.process_time() - start
        if isinstance(decision, Placed):
            index.reserve(decision, request)
            allocated += decision.gpu_milli * len(decision.gpus)
            placed += 1
        else:
            failed += 1
        level = round(100 * arrived / capacity)
        sums[level] += 100 * allocated / capacity
        counts[level] += 1
    levels = {lv: sums[lv] / counts[lv] for lv in sorted(sums)}
    return RunResult(levels, placed, failed, spent)
