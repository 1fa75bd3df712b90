"""Scores: how good a fitting (node, GPUs) is under each policy.  Lower is better.

Each function returns a `(node_key, gpu_key)` pair for `search.best_placement`.  The
baseline scores reproduce the plugins of the FGD paper's simulator (integer-valued, so that
ties - broken at random by the Kubernetes scheduler - are as frequent as there), because the
trace replay validates itself against the paper's numbers for them.
"""
from __future__ import annotations

import math

from placement.engine.fragmentation import FragTable
from placement.engine.index import Group, Node
from placement.engine.model import GPU_MILLI, PodRequest

MAX_SCORE = 100
"""The Kubernetes framework's maximum node score, which the baseline formulas scale to."""


def gpu_milli_after(group: Group, gpus: tuple[int, ...], request: PodRequest) -> tuple[int, ...]:
    """Free milli per GPU of the group once `request` holds `gpus`."""
    if not gpus:
        return group.milli_free
    free = list(group.milli_free)
    charge = GPU_MILLI if request.is_whole_gpu else None
    for i in gpus:
        free[i] -= charge if charge is not None else request.charge_milli(group.layout.vram_mib[i])
    return tuple(free)


def best_fit(group: Group, node: Node, gpus: tuple[int, ...], request: PodRequest,
             max_cpu_milli: int, max_gpu_milli: int) -> tuple[int, int]:
    """Least leftover wins: half CPU, half GPU, each over the fleet's largest node.

    Node key: minus the simulator's integer BestFit score.  GPU key: the chosen GPU's free
    milli before placing (the tightest GPU that fits).
    """
    cpu_left = (node.cpu_free - request.cpu_milli) / max_cpu_milli
    gpu_left = (group.gpu_milli_free - request.gpu_milli_total) / max_gpu_milli
    score = int((1.0 - 0.5 * cpu_left - 0.5 * gpu_left) * MAX_SCORE)
    return (-score, _tightness(group, gpus))


def _tightness(group: Group, gpus: tuple[int, ...]) -> int:
    return sum(group.milli_free[i] for i in gpus)


def gpu_packing(group: Group, node: Node, gpus: tuple[int, ...], request: PodRequest) -> tuple[int, int]:
    """GPU packing: share a used GPU first, then use free GPUs of a used node, then a free node.

    Tiers, from best: (1) the GPUs chosen are already in use - the fuller the better;
    (2) some chosen GPUs are free but the node is in use - the fewer taken the better;
    (3) the node is entirely free - the fewer GPUs it has the better.  CPU-only requests score
    the same everywhere.  Integers as in the simulator.
    """
    if request.gpu_count == 0:
        return (0, 0)
    milli = group.milli_free
    fully_free = sum(1 for v in milli if v == GPU_MILLI)
    if fully_free == len(milli):
        return (-max(MAX_SCORE // 3 - fully_free, fully_free), _tightness(group, gpus))
    free_used = sum(1 for i in gpus if milli[i] == GPU_MILLI)
    if free_used:
        return (-max(MAX_SCORE // 2 - free_used, MAX_SCORE // 3), _tightness(group, gpus))
    ratio = sum(milli[i] * 100 // GPU_MILLI for i in gpus)
    return (-max(MAX_SCORE - ratio // 10, MAX_SCORE // 2), _tightness(group, gpus))


def frag_delta(table: FragTable, group: Group, node: Node, gpus: tuple[int, ...],
               request: PodRequest) -> float:
    """How much the node's fragmentation grows if `request` takes `gpus` (milli, may be < 0)."""
    layout = group.layout
    before = table.frag(layout, group.milli_free, node.cpu_free, node.mem_free)
    after = table.frag(layout, gpu_milli_after(group, gpus, request),
                       node.cpu_free - request.cpu_milli, node.mem_free - request.memory_mib)
    return after - before


def fgd(table: FragTable, group: Group, node: Node, gpus: tuple[int, ...],
        request: PodRequest) -> tuple[int, int]:
    """FGD as the paper's simulator scores it: sigmoid of the fragmentation drop, 0..100, int."""
    delta = frag_delta(table, group, node, gpus, request)
    x = -delta / GPU_MILLI
    score = int(MAX_SCORE / (1.0 + math.exp(-x))) if x > -700 else 0
    return (-score, 0)
