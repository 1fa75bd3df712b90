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
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from placement.engine.filters import fresh_verdict
from placement.engine.index import CapacityIndex, Group
from placement.engine.model import PodRequest
from placement.engine.search import ScoreKey

GroupScore = Callable[[Group], "tuple[ScoreKey, tuple[int, ...]] | None"]
"""(key, GPUs) for the best placement on a group that passed every filter, or None."""

_MAX_RANKINGS = 4096
_LOG_LIMIT = 100_000


def trim_logs(index: CapacityIndex) -> None:
    """Drop log entries every ranking has read (call it on an index kept for long: only
    decisions that rank trim them, and updates log too); rankings that lag by more than the limit
    (request shapes not seen for a long while) are dropped and rebuilt when next needed."""
    head_created = index.created_offset + len(index.created)
    head_touched = index.touched_offset + len(index.touched)
    low_created, low_touched = head_created, head_touched
    for key, rankings in index.memo.items():
        if not (isinstance(key, tuple) and key[0] == "rankings"):
            continue
        for request, ranking in list(rankings.items()):
            if (head_created - ranking.synced > _LOG_LIMIT // 2
                    or head_touched - ranking.touched_synced > _LOG_LIMIT // 2):
                del rankings[request]
            else:
                low_created = min(low_created, ranking.synced)
                low_touched = min(low_touched, ranking.touched_synced)
    index.forget_logs(low_created, low_touched)


@dataclass(slots=True)
class Ranking:
    """Groups that can hold one request shape, best first (lazy heap), and those that cannot
    (so that the reasons for an unplaceable request need not re-examine the fleet)."""

    synced: int = 0
    heap: list[tuple[ScoreKey, int, int, Group, tuple[int, ...]]] = field(default_factory=list)
    rejected: dict[Group, list[Any]] = field(default_factory=dict)  # group -> [verdict, members counted]
    counts: Counter[Any] = field(default_factory=Counter)  # verdict -> nodes
    touched_synced: int = 0


def rejections(index: CapacityIndex, policy: str, request: PodRequest
               ) -> Counter[tuple[str, str]] | None:
    """Nodes per (filter, reason) over the live groups the ranking of `request` rejected;
    None if there is no ranking.  Right after `best_group` answered None these are all the
    nodes, so this is the reason an unplaceable request gets.  Kept incrementally: only
    groups whose membership changed since the last call are looked at."""
    ranking: Ranking | None = index.memo.get(("rankings", policy), {}).get(request)
    if ranking is None:
        return None
    rejected, counts = ranking.rejected, ranking.counts
    for group in index.touched[ranking.touched_synced - index.touched_offset:]:
        entry = rejected.get(group)
        if entry is not None:
            size = len(group.members) if group.alive else 0
            counts[entry[0]] += size - entry[1]
            entry[1] = size
            if not group.alive:
                del rejected[group]
    ranking.touched_synced = index.touched_offset + len(index.touched)
    return +counts


def best_group(index: CapacityIndex, policy: str, request: PodRequest,
               score: GroupScore) -> tuple[Group, tuple[int, ...]] | None:
    """The live group with the lowest score key for `request`, and its GPUs; None if none."""
    rankings = index.memo.setdefault(("rankings", policy), {})
    ranking = rankings.get(request)
    if ranking is None:
        if len(rankings) >= _MAX_RANKINGS:
            rankings.clear()
        ranking = rankings[request] = Ranking(synced=index.created_offset,
                                              touched_synced=index.touched_offset
                                              + len(index.touched))
        _push(ranking, index.groups(), score, request)
    else:
        start = ranking.synced - index.created_offset
        _push(ranking, (g for g in index.created[start:] if g.alive), score, request)
    ranking.synced = index.created_offset + len(index.created)
    if len(index.created) + len(index.touched) > _LOG_LIMIT:
        trim_logs(index)
    heap = ranking.heap
    if len(heap) > 4 * len(index) + 64:
        heap[:] = [entry for entry in heap if entry[3].alive]
        heapq.heapify(heap)
    while heap:
        key, ordinal, seq, group, gpus = heap[0]
        if not group.alive:
            heapq.heappop(heap)
        elif group.members[0].ordinal != ordinal:
            heapq.heapreplace(heap, (key, group.members[0].ordinal, seq, group, gpus))
        else:
            return group, gpus
    return None


def _push(ranking: Ranking, groups: Iterable[Group], score: GroupScore, request: PodRequest) -> None:
    heap, rejected = ranking.heap, ranking.rejected
    for group in groups:
        verdict = fresh_verdict(group, request)
        found = score(group) if verdict is None else None
        if found is None:
            if group not in rejected:
                rejected[group] = [verdict, len(group.members)]
                ranking.counts[verdict] += len(group.members)
        else:
            key, gpus = found
            heapq.heappush(heap, (key, group.members[0].ordinal, group.seq, group, gpus))
