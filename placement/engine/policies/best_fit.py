"""Best-fit (alias binpack): the node that the request leaves with the least free capacity.

Leftover is measured as in the FGD paper's BestFit baseline: half the free CPU over the
fleet's largest CPU, plus half the free GPU milli over the fleet's largest GPU count, scored
in whole percent; the GPU share goes to the tightest GPU that fits.  Good for density of
whole-GPU work; blind to *which* leftovers later requests can use.
"""
from __future__ import annotations

import random
from functools import partial

from placement.engine import scores
from placement.engine.index import CapacityIndex, Group, Node
from placement.engine.model import Placed, PodRequest
from placement.engine.search import best_placement


def choose(index: CapacityIndex, request: PodRequest,
           rng: random.Random | None = None) -> Placed | None:
    """Best-fit placement; ties (same whole percent) broken by `rng` or node order."""
    score = partial(_score, request=request, max_cpu=index.max_cpu_milli,
                    max_gpu=index.max_gpu_milli)
    return best_placement(index, request, score, rng)


def _score(group: Group, node: Node, gpus: tuple[int, ...], *, request: PodRequest, max_cpu: int,
           max_gpu: int) -> tuple[int, int]:
    return scores.best_fit(group, node, gpus, request, max_cpu, max_gpu)
