"""GPU packing: keep whole GPUs and whole nodes free for the requests that need them.

Tiers, from best: put a share on a GPU already in use (the fuller the better), else take free
GPUs on a node already in use, else start a node - the smallest.  This is the paper's
GpuPacking baseline; it says nothing about CPU, so CPU-only requests go anywhere.
"""
from __future__ import annotations

import random

from placement.engine import scores
from placement.engine.index import CapacityIndex, Group, Node
from placement.engine.model import Placed, PodRequest
from placement.engine.search import best_placement


def choose(index: CapacityIndex, request: PodRequest,
           rng: random.Random | None = None) -> Placed | None:
    """Packing placement; ties broken by `rng` or node order."""
    def score(group: Group, node: Node, gpus: tuple[int, ...]) -> tuple[int, int]:
        return scores.gpu_packing(group, node, gpus, request)
    return best_placement(index, request, score, rng)
