"""Filters: which nodes can hold a request, and, when none can, why.

Each filter answers for a group of identical-GPU nodes (`index.Group`) or for one node, and
returns `None` when it passes or a short reason when it does not.  They run in the order of
`FILTERS`; a node is charged to the first filter that rejects it, so the aggregated reasons in
`Unplaceable` add up to the fleet size.

GPU rules (`PodRequest` states the units):
- a share (one GPU, part of it) fits a GPU of an allowed model with free milli >= the milli
  charged and free vRAM >= the vRAM charged;
- whole GPUs (`gpu_count` of them) must be entirely free, of one model and size, and
  contiguous by index on the node.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache

from placement.engine.index import CapacityIndex, Group, Layout
from placement.engine.model import GPU_MILLI, PodRequest

FILTERS = ("cpu", "memory", "gpu-model", "gpu-capacity")
"""Filter names, in the order they run (keys of `Unplaceable.reasons`): cheapest first."""


def gpu_model_reason(layout: Layout, request: PodRequest) -> str | None:
    """None if `layout` has GPUs the request may use (or it asks for none), else why not."""
    if request.gpu_count == 0:
        return None
    if not layout.models:
        return "no GPUs"
    if request.gpu_models and not (layout.model_set & request.gpu_models):
        return f"GPU model not in {sorted(request.gpu_models)}"
    return None


def _allowed(model: str, request: PodRequest) -> bool:
    return not request.gpu_models or model in request.gpu_models


def share_charge(request: PodRequest, vram_mib: int) -> tuple[int, int]:
    """(milli, vRAM MiB) a one-GPU request charges on a GPU of `vram_mib` (see PodRequest)."""
    return request.charge_for(vram_mib)


def gpu_choices(group: Group, request: PodRequest) -> tuple[tuple[int, ...], ...]:
    """Every GPU index tuple of `group` that can hold the request's GPU part.

    Shares: one-tuples of fitting GPUs.  Whole GPUs: every contiguous run of `gpu_count`
    entirely free GPUs of an allowed model and one size.  CPU-only: `((),)`.  Memoised per
    group.
    """
    if request.gpu_count == 0:
        return ((),)
    key = ("choices", request.gpu_count, request.gpu_milli, request.vram_mib, request.gpu_models)
    found = group.memo.get(key)
    if found is None:
        found = group.memo[key] = _gpu_choices(group, request)
    return found


def _gpu_choices(group: Group, request: PodRequest) -> tuple[tuple[int, ...], ...]:
    layout, mfree, vfree = group.layout, group.milli_free, group.vram_free
    out: list[tuple[int, ...]] = []
    if not request.is_whole_gpu:
        for i, model in enumerate(layout.models):
            if _allowed(model, request):
                milli, vram = share_charge(request, layout.vram_mib[i])
                if mfree[i] >= milli and vfree[i] >= vram:
                    out.append((i,))
        return tuple(out)
    count, n = request.gpu_count, len(layout.models)
    if group.free_run < count:
        return ()
    free = [mfree[i] == GPU_MILLI and vfree[i] == layout.vram_mib[i]
            and _allowed(layout.models[i], request) for i in range(n)]
    for start in range(n - count + 1):
        run = range(start, start + count)
        if all(free[i] for i in run) and len({layout.vram_mib[i] for i in run}) == 1:
            out.append(tuple(run))
    return tuple(out)


def distinct_choices(group: Group, request: PodRequest) -> tuple[tuple[int, ...], ...]:
    """`gpu_choices`, keeping only the first of choices that leave the same multiset of free
    milli per GPU (for scores that do not care which index is which).  Memoised."""
    key = ("distinct", request.gpu_count, request.gpu_milli, request.vram_mib, request.gpu_models)
    found = group.memo.get(key)
    if found is None:
        seen, out = set(), []
        for gpus in gpu_choices(group, request):
            state = tuple(group.milli_free[i] for i in gpus)
            if state not in seen:
                seen.add(state)
                out.append(gpus)
        found = group.memo[key] = tuple(out)
    return found


def gpu_capacity_reason(group: Group, request: PodRequest) -> str | None:
    """None if some GPUs of the group can hold the request, else why not."""
    if gpu_choices(group, request):
        return None
    return _texts(request)[2][1]


@lru_cache(maxsize=4096)
def _texts(request: PodRequest) -> tuple[tuple[str, str], ...]:
    """The (filter, reason) verdicts for `request`, built once per request."""
    if request.is_whole_gpu:
        gpu = f"no {request.gpu_count} contiguous free GPUs"
    else:
        gpu = f"no GPU with {request.gpu_milli} free milli and {request.vram_mib} MiB free vRAM"
    return (("cpu", f"not enough free CPU (need {request.cpu_milli} milli)"),
            ("memory", f"not enough free memory (need {request.memory_mib} MiB)"),
            ("gpu-capacity", gpu))


def group_verdict(group: Group, request: PodRequest) -> tuple[str, str] | None:
    """(filter name, reason) of the first filter rejecting the group's nodes, or None.

    A group is one exact node state, so this holds for each member.  Memoised per group.
    """
    key = ("verdict", request)
    memo = group.memo
    if key in memo:
        cached: tuple[str, str] | None = memo[key]
        return cached
    verdict = memo[key] = fresh_verdict(group, request)
    return verdict


def fresh_verdict(group: Group, request: PodRequest) -> tuple[str, str] | None:
    """`group_verdict` without its memo (for callers that ask once per group)."""
    verdict = None
    node = group.members[0]
    if node.cpu_free < request.cpu_milli:
        verdict = _texts(request)[0]
    elif node.mem_free < request.memory_mib:
        verdict = _texts(request)[1]
    elif reason := gpu_model_reason(group.layout, request):
        verdict = ("gpu-model", reason)
    elif not gpu_choices(group, request):
        verdict = _texts(request)[2]
    return verdict


def unplaceable_reasons(index: CapacityIndex, request: PodRequest,
                        rejections: Counter[tuple[str, str]] | None = None) -> dict[str, str]:
    """Why no node fits: filter name -> "<n> nodes: <reason>" (the two most common shown).

    `rejections`: nodes per (filter, reason), when the caller has counted them already
    (default: every group is examined)."""
    if rejections is None:
        rejections = Counter()
        for group in index.groups():
            verdict = group_verdict(group, request)
            if verdict is not None:
                rejections[verdict] += len(group.members)
    counts: dict[str, Counter[str]] = {name: Counter() for name in FILTERS}
    for (name, reason), n in rejections.items():
        counts[name][reason] += n
    reasons = {}
    for name, counter in counts.items():
        if counter:
            total = sum(counter.values())
            # ties by name: the same counts must read the same however they were gathered
            top = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
            reasons[name] = f"{total} nodes: " + "; ".join(r for r, _ in top)
    return reasons or {"fleet": "no nodes"}
