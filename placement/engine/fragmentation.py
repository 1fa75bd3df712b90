"""GPU fragmentation of a node with respect to a target workload (the FGD measure).

For one expected request shape p, the free GPU milli of a node that p could *not* use is:
- all of it, if p cannot land on the node at all (model not allowed, too little CPU - or
  memory, when the profile is built with memory - or too few GPUs with p's milli free), or if
  p needs no GPU;
- otherwise the free milli of the GPUs that each have less than p's milli free.
The node's fragmentation is the popularity-weighted sum over the profile.  FGD (ATC'23) places
each pod where this grows the least; Thaw's policy starts from the same measure.

*Stranding* (Thaw's table, `stranding=True`): FGD asks only whether *one* pod of each shape
still fits, so a node whose GPUs are all free but whose CPU would back only one or two more
GPU pods counts as unfragmented.  On the trace's most common node (8 GPUs, 96 cores) the
expected GPU pod needs ~11 cores per GPU, so a 32-core CPU-only pod there strands about two
GPUs that FGD never sees.  With stranding, the part of a node's free GPU that the expected
mix could use (FGD's non-fragmented part) is also counted as fragmented in the proportion its
free CPU (or memory) falls short of what the mix needs to use *all* the free GPU:

    short = max(0, 1 - cpu_free / (cpu_per_milli * gpu_free), same for memory)

where `cpu_per_milli` is the mix's CPU per GPU milli over the shapes this layout can hold,
weighted by popularity.  It is the mix's ratio, not each shape's, because a node is filled by
the mix: per-shape ratios (fill this node with only the most CPU-hungry shape) call nearly
every node fragmented; on the tuning seeds they won on the CPU-heaviest trace and lost up to
0.6 points on the multi-GPU ones.  When one pod
no longer fits, FGD's rule counts all of it, as before.

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
    cpu_per_milli: float = 0.0  # the usable shapes' mean CPU per GPU milli (stranding)
    mem_per_milli: float = 0.0  # ... and memory MiB per GPU milli


# (fragmentation if CPU and memory fit every shape, ((cpu, mem, extra if not), ...))
_GpuPart = tuple[float, tuple[tuple[int, int, float], ...]]


@dataclass(slots=True)
class FragTable:
    """Memoised fragmentation for one profile.  `use_memory`: also test memory fit;
    `stranding`: also count GPU that the free CPU (and memory) cannot back (module docstring)."""

    profile: WorkloadProfile
    use_memory: bool = False
    stranding: bool = False
    _terms: dict[Layout, _LayoutTerms] = field(default_factory=dict)
    _memo: dict[tuple[Layout, tuple[int, ...], int, int], float] = field(default_factory=dict)
    _gpu_memo: dict[tuple[Layout, tuple[int, ...]], _GpuPart] = field(default_factory=dict)

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
            short = self._shortfall(layout, milli_free, cpu_free, mem_free) if extras else 0.0
            for cpu, mem, extra in extras:
                if cpu > cpu_free or (check_mem and mem > mem_free):
                    value += extra
                else:
                    value += extra * short
            self._memo[key] = value
        return value

    def _shortfall(self, layout: Layout, milli_free: tuple[int, ...], cpu_free: int,
                   mem_free: int) -> float:
        """The fraction of the free GPU the free CPU / memory cannot back (0 unless
        `stranding`; 0..1)."""
        if not self.stranding:
            return 0.0
        terms = self.terms(layout)
        need = terms.cpu_per_milli * sum(milli_free)
        short = 1.0 - cpu_free / need if need > 0 else 0.0
        if self.use_memory:
            need = terms.mem_per_milli * sum(milli_free)
            if need > 0:
                short = max(short, 1.0 - mem_free / need)
        return short if short > 0 else 0.0

    def _gpu_part(self, layout: Layout, milli_free: tuple[int, ...]) -> _GpuPart:
        """(fragmentation if CPU and memory fit every shape, [(cpu, mem, extra if not)])."""
        canonical = tuple(sorted(milli_free))
        key = (layout, canonical)
        found = self._gpu_memo.get(key)
        if found is None:
            if len(self._gpu_memo) > 200_000:
                self._gpu_memo.clear()
            found = self._gpu_memo[key] = _gpu_part(self.terms(layout), canonical)
        return found


def _gpu_part(terms: _LayoutTerms, free: tuple[int, ...]) -> _GpuPart:
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
    gpu = sum(w * milli * count for milli, count, _, _, w in shapes)
    if not gpu:
        return _LayoutTerms(blind, tuple(shapes))
    cpu = sum(w * c for _, _, c, _, w in shapes)
    mem = sum(w * m for _, _, _, m, w in shapes)
    return _LayoutTerms(blind, tuple(shapes), cpu / gpu, mem / gpu)
