"""Thaw's policy (being tuned): FGD's fragmentation measure, exact, ranked incrementally."""
from __future__ import annotations

import random

from placement.engine import scores
from placement.engine.filters import distinct_choices, gpu_model_reason
from placement.engine.index import CapacityIndex, Group
from placement.engine.model import Placed, PodRequest
from placement.engine.policies.profile import frag_table
from placement.engine.ranking import best_group
from placement.engine.search import placement

USE_MEMORY = True
QUANTUM = 0.0


def choose(index: CapacityIndex, request: PodRequest,
           rng: random.Random | None = None) -> Placed | None:
    """Thaw placement; `rng` is ignored (decisions are deterministic)."""
    table = frag_table(index, request, use_memory=USE_MEMORY)

    def score(group: Group):
        node = group.members[0]
        if node.cpu_free < request.cpu_milli or node.mem_free < request.memory_mib:
            return None
        if gpu_model_reason(group.layout, request) is not None:
            return None
        best = None
        for gpus in distinct_choices(group, request):
            delta = scores.frag_delta(table, group, node, gpus, request)
            key = _key(delta, group, node, gpus, request)
            if best is None or key < best[0]:
                best = (key, gpus)
        return best

    found = best_group(index, "thaw", request, score)
    if found is None:
        return None
    group, gpus = found
    return placement(group.members[0], gpus, request)


def _key(delta, group, node, gpus, request):
    q = round(delta / QUANTUM) if QUANTUM else round(delta, 6)
    return (q, node.ordinal)
