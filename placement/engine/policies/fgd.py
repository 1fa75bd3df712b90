"""FGD (Weng et al., ATC'23): place where the expected GPU fragmentation grows the least.

A node's fragmentation is the GPU milli it has free that the expected workload could not use
(`fragmentation.py`).  FGD scores every (node, GPU) by the growth that placing the request
causes, through the paper simulator's sigmoid to an integer 0..100, and takes the best; ties
go at random (trace replay) or to the first node.  Memory is not part of the measure, as in
the paper.
"""
from __future__ import annotations

import random

from placement.engine import scores
from placement.engine.index import CapacityIndex, Group, Node
from placement.engine.model import Placed, PodRequest
from placement.engine.policies.profile import frag_table
from placement.engine.search import best_placement


def choose(index: CapacityIndex, request: PodRequest,
           rng: random.Random | None = None) -> Placed | None:
    """FGD placement (see module docstring)."""
    table = frag_table(index, request, use_memory=False)

    def score(group: Group, node: Node, gpus: tuple[int, ...]) -> tuple[int, int]:
        return scores.fgd(table, group, node, gpus, request)
    return best_placement(index, request, score, rng)
