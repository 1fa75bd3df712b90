"""The target workload: what kinds of request are expected, and how often.

Fragmentation-aware policies (FGD and Thaw's) judge a placement by how much of the remaining
GPU capacity it leaves usable *by the requests that will come*.  A `WorkloadProfile` is that
expectation: request shapes with weights summing to 1.  In the trace replay it is built from
the trace, as the FGD paper does; in the running platform from recent requests.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from placement.engine.model import PodRequest


@dataclass(frozen=True, slots=True)
class TypicalPod:
    """One request shape of the profile; `weight` in (0, 1]."""

    cpu_milli: int
    memory_mib: int
    gpu_count: int
    gpu_milli: int
    gpu_models: frozenset[str]
    weight: float


@dataclass(frozen=True, slots=True)
class WorkloadProfile:
    """Request shapes and their popularity (weights sum to 1)."""

    pods: tuple[TypicalPod, ...]

    @classmethod
    def from_requests(cls, requests: Iterable[PodRequest], coverage: float = 0.95,
                      with_memory: bool = False) -> WorkloadProfile:
        """The most popular shapes covering `coverage` of `requests`, renormalised.

        Shapes are (CPU, GPU count, milli per GPU, models) - and memory if `with_memory`.
        Following the FGD paper, the long tail beyond `coverage` is dropped.
        """
        counts: Counter[tuple] = Counter()
        for r in requests:
            milli = 1000 if r.is_whole_gpu else r.gpu_milli
            counts[(r.cpu_milli, r.memory_mib if with_memory else 0, r.gpu_count, milli,
                     r.gpu_models)] += 1
        total = sum(counts.values())
        if not total:
            return cls(())
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], _order_key(kv[0])))
        kept, covered = [], 0
        for shape, n in ranked:
            if covered >= coverage * total:
                break
            kept.append((shape, n))
            covered += n
        return cls(tuple(TypicalPod(c, m, k, g, models, n / covered)
                         for (c, m, k, g, models), n in kept))


def _order_key(shape: tuple) -> tuple:
    """Deterministic order among equally popular shapes: larger requests first."""
    cpu, mem, count, milli, models = shape
    return (-cpu, -milli, -count, sorted(models))
