"""First-fit: the first node, in the order the fleet was listed, that passes every filter.

What InferX ships.  Cheap and predictable, but it packs by accident of node order: GPU
shares land on the first GPU with room, wherever that leaves the rest.
"""
from __future__ import annotations

import random

from placement.engine.filters import gpu_choices, gpu_model_reason
from placement.engine.index import CapacityIndex
from placement.engine.model import Placed, PodRequest
from placement.engine.search import placement


def choose(index: CapacityIndex, request: PodRequest,
           rng: random.Random | None = None) -> Placed | None:
    """The first fitting node and its lowest-indexed fitting GPUs; `rng` is ignored."""
    for node in index.ordered():
        if node.cpu_free < request.cpu_milli or node.mem_free < request.memory_mib:
            continue
        group = node.group
        assert group is not None  # every node in the index is in a group
        if gpu_model_reason(group.layout, request) is None:
            choices = gpu_choices(group, request)
            if choices:
                return placement(node, choices[0], request)
    return None
