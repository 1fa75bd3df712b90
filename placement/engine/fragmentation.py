"""GPU fragmentation of a node with respect to a target workload (the FGD measure).

For one expected request shape p, the free GPU milli of a node that p could *not* use is:
- all of it, if p cannot land on the node at all (model not allowed, too little CPU - or
  memory, when the profile is built with memory - or too few GPUs with p's milli free), or if
  p needs no GPU;
- otherwise the free milli of the GPUs that each have less than p's milli free.
The node's fragmentation is the popularity-weighted sum over the profile.  FGD (ATC'23) places
each pod where this grows the least; Thaw's policy starts from the same measure.

Everything here is a pure function of (layout, free milli per GPU, free CPU, free memory); it
is memoised in a `FragTable`, owned by whoever holds the profile.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from placement.engine.index import Layout
from placement.engine.model import GPU_MILLI
from placement.engine.workload import WorkloadProfile


@dataclass(slots=True)
class _LayoutTerms:
    """The profile as seen by one GPU layout: blind weight and the usable shapes."""

    blind_weight: float
    shapes: tuple[tuple[int, int, int, int, float], ...]  # (milli, count, cpu, mem, weight)


@dataclass(slots=True)
class FragTable:
    """Memoised fragmentation for one profile.  `use_memory`: also test memory fit."""

    profile: WorkloadProfile
    use_memory: bool = False
    _terms: dict = field(default_factory=dict)
    _memo: dict = field(default_factory=dict)

    def terms(self, layout: Layout) -> _LayoutTerms:
        found = self._terms.get(layout)
        if found is None:
            found = self._terms[layout] = _layout_terms(self.profile, layout)
        return found

    def frag(self, layout: Layout, milli_free: tuple[int, ...], cpu_free: int,
             mem_free: int = 0) -> float:
        """Expected unusable free GPU milli on a node in this state (see module docstring)."""
        key = (layout, milli_free, cpu_free, mem_free if self.use_memory else 0)
        value = self._memo.get(key)
        if value is None:
            if len(self._memo) > 2_000_000:
                self._memo.clear()
            value = self._memo[key] = self._compute(layout, milli_free, cpu_free, mem_free)
        return value

    def _compute(self, layout: Layout, milli_free: tuple[int, ...], cpu_free: int,
                 mem_free: int) -> float:
        total = sum(milli_free)
        if total == 0:
            return 0.0
        terms = self.terms(layout)
        free = sorted(milli_free)
        prefix = [0]
        for v in free:
            prefix.append(prefix[-1] + v)
        n = len(free)
        frag = terms.blind_weight * total
        check_mem = self.use_memory
        for milli, count, cpu, mem, weight in terms.shapes:
            if cpu > cpu_free or (check_mem and mem > mem_free):
                frag += weight * total
                continue
            below = bisect.bisect_left(free, milli)
            if n - below < count:
                frag += weight * total
            else:
                frag += weight * prefix[below]
        return frag


def _layout_terms(profile: WorkloadProfile, layout: Layout) -> _LayoutTerms:
    models = layout.model_set
    blind, shapes = 0.0, []
    for pod in profile.pods:
        usable = pod.gpu_count > 0 and bool(models) and (
            not pod.gpu_models or bool(models & pod.gpu_models))
        if not usable or pod.gpu_count > len(layout.models):
            blind += pod.weight
        else:
            milli = GPU_MILLI if pod.gpu_count > 1 else pod.gpu_milli
            shapes.append((milli, pod.gpu_count, pod.cpu_milli, pod.memory_mib, pod.weight))
    return _LayoutTerms(blind, tuple(shapes))
