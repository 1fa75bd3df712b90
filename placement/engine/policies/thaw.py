"""Thaw's policy (being tuned): FGD's fragmentation measure, exact, ranked incrementally."""
from __future__ import annotations

import math
import random

from placement.engine import scores
from placement.engine.filters import distinct_choices
from placement.engine.index import CapacityIndex, Group
from placement.engine.model import Placed, PodRequest
from placement.engine.policies.profile import frag_table
from placement.engine.ranking import best_group
from placement.engine.search import placement

USE_MEMORY = False
QUANTUM = 0.0


def choose(index: CapacityIndex, request: PodRequest,
           rng: random.Random | None = None) -> Placed | None:
    """Thaw placement; `rng` is ignored (decisions are deterministic)."""
    table = frag_table(index, request, use_memory=USE_MEMORY)

    def score(group: Group):
        node = group.members[0]
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
    x = -delta / 1000
    fgd = -int(100 / (1 + math.exp(-x))) if x > -700 else 0
    left = (group.gpu_milli_free - request.gpu_milli_total) / 8000 + (node.cpu_free - request.cpu_milli) / 128000
    return (fgd, left, sum(group.milli_free[i] for i in gpus))
