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
    _gpu_memo: dict = field(default_factory=dict)

    def terms(self, layout: Layout) -> _LayoutTerms:
        found = self._terms.get(layout)
        if found is None:
            found = self._terms[layout] = _layout_terms(self.profile, layout)
        return found

    def frag(self, layout: Layout, milli_free: tuple[int, ...], cpu_free: int,
             mem_free: int = 0) -> float:
        """Expected unusable free GPU milli on a node in this state (see module docstring)."""
        if not self.use_memory:
            mem_free = 0
        key = (layout, milli_free, cpu_free, mem_free)
        value = self._memo.get(key)
        if value is None:
            if len(self._memo) > 1_000_000:
                self._memo.clear()
            base, extras = self._gpu_part(layout, milli_free)
            value = base
            check_mem = self.use_memory
            for cpu, mem, extra in extras:
                if cpu > cpu_free or (check_mem and mem > mem_free):
                    value += extra
            self._memo[key] = value
        return value

    def _gpu_part(self, layout: Layout, milli_free: tuple[int, ...]):
        """(fragmentation if CPU and memory fit every shape, [(cpu, mem, extra if not)])."""
        canonical = tuple(sorted(milli_free))
        key = (layout, canonical)
        found = self._gpu_memo.get(key)
        if found is None:
            if len(self._gpu_memo) > 200_000:
                self._gpu_memo.clear()
            found = self._gpu_memo[key] = _gpu_part(self.terms(layout), canonical)
        return found


def _gpu_part(terms: _LayoutTerms, free: tuple[int, ...]):
    total = sum(free)
    if total == 0:
        return 0.0, ()
    prefix = [0]
    for v in free:
        prefix.append(prefix[-1] + v)
    n = len(free)
    base = terms.blind_weight * total
    extras = []
    for milli, count, cpu, mem, weight in terms.shapes:
        below = bisect.bisect_left(free, milli)
        if n - below < count:
            base += weight * total
        else:
            base += weight * prefix[below]
            extras.append((cpu, mem, weight * (total - prefix[below])))
    return base, tuple(e for e in extras if e[2] > 0)


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
