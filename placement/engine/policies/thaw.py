"""Thaw's policy (work in progress): FGD's measure, exact, with a packing tie-break."""
from __future__ import annotations

import random

from placement.engine import scores
from placement.engine.index import CapacityIndex
from placement.engine.model import Placed, PodRequest
from placement.engine.policies.profile import frag_table
from placement.engine.search import best_placement


def choose(index: CapacityIndex, request: PodRequest,
           rng: random.Random | None = None) -> Placed | None:
    """Thaw placement."""
    table = frag_table(index, request, use_memory=True)

    def score(group, node, gpus):
        delta = scores.frag_delta(table, group, node, gpus, request)
        return ((round(delta, 6), group.gpu_milli_free, node.cpu_free), 0)
    return best_placement(index, request, score, "ends", rng)
