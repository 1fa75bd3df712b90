"""The target workload: what kinds of request are expected, and how often.

Fragmentation-aware policies (FGD and Thaw's) judge a placement by how much of the remaining
GPU capacity it leaves usable *by the requests that will come*.  A `WorkloadProfile` is that
expectation: request shapes with weights summing to 1.  In the trace replay it is built from
the trace, as the FGD paper does; in the running platform from recent requests.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from placement.engine.model import PodRequest

# (CPU milli, GPU count, milli per GPU, models): a request's shape, as the FGD paper counts them.
_Shape = tuple[int, int, int, frozenset[str]]


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
    def from_requests(cls, requests: Iterable[PodRequest], coverage: float = 0.95
                      ) -> WorkloadProfile:
        """The most popular shapes covering `coverage` of `requests`, renormalised.

        A shape is (CPU, GPU count, milli per GPU, models), as in the FGD paper, which also
        drops the long tail beyond `coverage`; its memory is the most common memory request
        among the requests of that shape.
        """
        return cls.from_counts(Counter(requests), coverage)

    @classmethod
    def from_counts(cls, counts: Mapping[PodRequest, float], coverage: float = 0.95
                    ) -> WorkloadProfile:
        """`from_requests` over weighted requests: each request counts `counts[request]` times
        (fractions allowed: a running platform's counts decay with age).  Requests are taken
        in `counts`' order, so equal counts give `from_requests`' profile exactly."""
        shapes: dict[_Shape, float] = {}
        memory: dict[_Shape, dict[int, float]] = {}
        for r, n in counts.items():
            if n <= 0:
                continue
            milli = 1000 if r.is_whole_gpu else r.gpu_milli
            shape = (r.cpu_milli, r.gpu_count, milli, r.gpu_models)
            shapes[shape] = shapes.get(shape, 0) + n
            mem = memory.setdefault(shape, {})
            mem[r.memory_mib] = mem.get(r.memory_mib, 0) + n
        total = sum(shapes.values())
        if not total:
            return cls(())
        ranked = sorted(shapes.items(), key=lambda kv: (-kv[1], _order_key(kv[0])))
        kept: list[tuple[_Shape, float]] = []
        covered: float = 0
        for shape, n in ranked:
            if covered >= coverage * total:
                break
            kept.append((shape, n))
            covered += n
        return cls(tuple(
            TypicalPod(c, _most_common(memory[(c, k, g, models)]), k, g, models, n / covered)
            for (c, k, g, models), n in kept))

    def weighted_per_gpu(self) -> WorkloadProfile:
        """This profile with each multi-GPU shape weighing its popularity over its GPU count,
        renormalised (Thaw's fragmentation measure; why in `policies/thaw.py`)."""
        weights = [p.weight / p.gpu_count if p.gpu_count > 1 else p.weight for p in self.pods]
        total = sum(weights)
        if not total:
            return self
        return WorkloadProfile(tuple(replace(p, weight=w / total)
                                     for p, w in zip(self.pods, weights)))

    def scaled(self, factors: tuple[float, ...]) -> WorkloadProfile:
        """This profile with each shape's weight multiplied by its factor (in `pods` order),
        not renormalised (Thaw's supply weighting, `scarcity.supply_factors`)."""
        return WorkloadProfile(tuple(replace(p, weight=p.weight * f)
                                     for p, f in zip(self.pods, factors, strict=True)))

    def demand_per_gpu_milli(self) -> tuple[float, float]:
        """(CPU milli, memory MiB) the expected request asks for per GPU milli it asks for,
        CPU-only requests included; (0, 0) when the profile asks for no GPU."""
        gpu = sum(p.weight * p.gpu_count * p.gpu_milli for p in self.pods)
        if not gpu:
            return 0.0, 0.0
        cpu = sum(p.weight * p.cpu_milli for p in self.pods)
        mem = sum(p.weight * p.memory_mib for p in self.pods)
        return cpu / gpu, mem / gpu


def _most_common(weights: dict[int, float]) -> int:
    """The key of the largest weight; the first such on ties (as `Counter.most_common`)."""
    return max(weights.items(), key=lambda kv: kv[1])[0]


def _order_key(shape: _Shape) -> tuple[int, int, int, list[str]]:
    """Deterministic order among equally popular shapes: larger requests first."""
    cpu, count, milli, models = shape
    return (-cpu, -milli, -count, sorted(models))


def profile_distance(a: WorkloadProfile | None, b: WorkloadProfile | None) -> float:
    """How far apart two profiles are: the total variation distance between their shapes'
    weights (0: the same shapes equally popular, 1: no shape in common). None (no profile) is
    0 from None and 1 from any profile."""
    if a is None or b is None:
        return 0.0 if a is b else 1.0
    wa, wb = _weights(a), _weights(b)
    return 0.5 * sum(abs(wa.get(k, 0.0) - wb.get(k, 0.0)) for k in wa.keys() | wb.keys())


def _weights(profile: WorkloadProfile) -> dict[tuple[int, int, int, int, frozenset[str]], float]:
    return {(p.cpu_milli, p.memory_mib, p.gpu_count, p.gpu_milli, p.gpu_models): p.weight for p in profile.pods}
