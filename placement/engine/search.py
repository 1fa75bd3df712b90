"""Candidate search shared by the scoring policies: visit fitting nodes, keep the best.

A scoring policy supplies `score(group, node, gpus) -> (node_key, gpu_key)` (lower is
better; comparable keys): a node is judged by the `node_key` of its best GPU choice, and the
GPU choice on a node by the whole pair (the first one on ties).  Members of a group share
one state, so each group is scored once and its members are tied.
Ties on the best key go to the lowest node ordinal (the paper's simulator takes the smallest
node name, which is the same on the trace), or to a uniformly random tied node when an `rng`
is given.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from placement.engine.filters import gpu_choices, gpu_model_reason, share_charge
from placement.engine.index import CapacityIndex, Group, Node
from placement.engine.model import GPU_MILLI, Placed, PodRequest

# A score key: a tuple of comparables (numbers, mostly), compared as a whole; lower is better.
ScoreKey = tuple[Any, ...]
ScoreFn = Callable[[Group, Node, tuple[int, ...]], ScoreKey]


def feasible_groups(index: CapacityIndex, request: PodRequest
                    ) -> Iterator[tuple[Group, tuple[tuple[int, ...], ...]]]:
    """(group, GPU choices) for every group whose GPUs can hold the request."""
    for group in index.groups():
        if gpu_model_reason(group.layout, request) is None:
            choices = gpu_choices(group, request)
            if choices:
                yield group, choices


def _runs(group: Group, request: PodRequest) -> Iterator[list[Node]]:
    """Fitting members, as runs of nodes with equal free CPU and memory."""
    members, keys = group.members, group.keys
    start = group.first_fitting(request.cpu_milli, request.memory_mib)
    if start < 0:
        return
    i, n, mem = start, len(members), request.memory_mib
    while i < n:
        j = i + 1
        cpu_mem = keys[i][:2]
        while j < n and keys[j][:2] == cpu_mem:
            j += 1
        if cpu_mem[1] >= mem:
            yield members[i:j]
        i = j


def best_placement(index: CapacityIndex, request: PodRequest, score: ScoreFn,
                   rng: random.Random | None = None) -> Placed | None:
    """The fitting (node, GPUs) with the lowest score, or None if nothing fits."""
    best_key: object = None
    tied: list[tuple[Node, tuple[int, ...]]] = []
    for group, choices in feasible_groups(index, request):
        for run in _runs(group, request):
            node = run[0]
            key, gpus = _best_choice(group, node, choices, score)
            key = key[0]
            if best_key is None or key < best_key:
                best_key, tied = key, [(n, gpus) for n in run]
            elif key == best_key:
                tied.extend((n, gpus) for n in run)
    if not tied:
        return None
    if rng is not None:
        node, gpus = tied[rng.randrange(len(tied))]
    else:
        node, gpus = min(tied, key=lambda t: t[0].ordinal)
    return placement(node, gpus, request)


def _best_choice(group: Group, node: Node, choices: tuple[tuple[int, ...], ...],
                 score: ScoreFn) -> tuple[ScoreKey, tuple[int, ...]]:
    """The lowest-scoring GPU choice on `node` (the first one on ties)."""
    best_key: ScoreKey | None = None
    best_gpus = choices[0]
    for gpus in choices:
        key = score(group, node, gpus)
        if best_key is None or key < best_key:
            best_key, best_gpus = key, gpus
    assert best_key is not None  # `choices` is never empty
    return best_key, best_gpus


def placement(node: Node, gpus: tuple[int, ...], request: PodRequest) -> Placed:
    """The `Placed` for `request` on `node`'s `gpus`, with the per-GPU shares it charges."""
    if not gpus:
        return Placed(node.name)
    vram = node.layout.vram_mib[gpus[0]]
    if request.is_whole_gpu:
        return Placed(node.name, gpus, GPU_MILLI, vram)
    milli, vram_charged = share_charge(request, vram)
    return Placed(node.name, gpus, milli, vram_charged)
