"""The pod sequence of one run: the trace, shuffled, tuned to the arrival target.

As the paper's simulator does it: all pods of the trace, ordered by name then shuffled with
the run's seed; if their GPU request is below the target (arrival % of the cluster's GPU
milli), pods drawn uniformly with replacement from the trace are appended until the next
draw's per-GPU milli would overshoot; if above, pods are removed at random until it is not.
A multi-GPU pod requests 1000 milli per GPU; CPU-only pods request none.
"""
from __future__ import annotations

import random

from placement.engine.model import PodRequest
from bench.tracesim.trace import TracePod


def arrival_sequence(pods: list[TracePod], cluster_gpu_milli: int, arrival_pct: float,
                     rng: random.Random) -> list[PodRequest]:
    """The requests of one run, in arrival order (see module docstring)."""
    ordered = sorted(pods, key=lambda p: p.name)
    rng.shuffle(ordered)
    seq = [p.request for p in ordered]
    target = arrival_pct / 100 * cluster_gpu_milli
    total = sum(r.gpu_milli_total for r in seq)
    if total > target:
        while total > target and seq:
            total -= seq.pop(rng.randrange(len(seq))).gpu_milli_total
        return seq
    while True:
        r = pods[rng.randrange(len(pods))].request
        per_gpu = 1000 if r.is_whole_gpu and r.gpu_count else r.gpu_milli
        if total + per_gpu > target:
            return seq
        total += r.gpu_milli_total
        seq.append(r)
