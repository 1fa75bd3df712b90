"""Per-request-shape rankings of groups, kept up to date incrementally.

A policy whose score for a (group, request) depends only on the group's state - true of every
policy here, since a group is one exact node state - can rank groups once and then keep the
ranking current: each ranking is a heap of (score, group) for one request shape, and on each
decision it scores only the groups created since its last look (`CapacityIndex.created`) and
drops dead groups lazily when they surface.  Ties go to the group holding the lowest node
ordinal: a group whose first member left is corrected when it surfaces, and one that gained
an earlier member is logged again by the index, so it is re-pushed.  A decision then costs O(new groups + log n)
rather than O(fleet), which is what makes Thaw's policy fast on large fleets.

The rankings live in the index's memo table, keyed by (policy, request); they are memo state,
not capacity, so keeping them there does not break the rule that decisions don't change
capacity.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from placement.engine.index import CapacityIndex, Group
from placement.engine.model import PodRequest

GroupScore = Callable[[Group], "tuple[tuple, tuple[int, ...]] | None"]
"""(key, GPUs) for the best placement on a group, or None if the group cannot hold it."""

_MAX_RANKINGS = 4096


@dataclass(slots=True)
class Ranking:
    """Groups that can hold one request shape, best first (lazy heap)."""

    synced: int = 0
    heap: list = field(default_factory=list)


def best_group(index: CapacityIndex, policy: str, request: PodRequest,
               score: GroupScore) -> tuple[Group, tuple[int, ...]] | None:
    """The live group with the lowest score key for `request`, and its GPUs; None if none."""
    rankings = index.memo.setdefault(("rankings", policy), {})
    ranking = rankings.get(request)
    if ranking is None:
        if len(rankings) >= _MAX_RANKINGS:
            rankings.clear()
        ranking = rankings[request] = Ranking(synced=index.created_offset)
        _push(ranking, index.groups(), score)
    else:
        start = ranking.synced - index.created_offset
        _push(ranking, (g for g in index.created[start:] if index.is_live(g)), score)
    ranking.synced = index.created_offset + len(index.created)
    heap = ranking.heap
    if len(heap) > 4 * len(index) + 64:
        heap[:] = [entry for entry in heap if index.is_live(entry[3])]
        heapq.heapify(heap)
    while heap:
        key, ordinal, seq, group, gpus = heap[0]
        if not index.is_live(group):
            heapq.heappop(heap)
        elif group.members[0].ordinal != ordinal:
            heapq.heapreplace(heap, (key, group.members[0].ordinal, seq, group, gpus))
        else:
            return group, gpus
    return None


def _push(ranking: Ranking, groups, score: GroupScore) -> None:
    heap = ranking.heap
    for group in groups:
        found = score(group)
        if found is not None:
            key, gpus = found
            heapq.heappush(heap, (key, group.members[0].ordinal, group.seq, group, gpus))
