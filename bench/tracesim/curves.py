"""Allocation curves over seeds, and how one policy's curve compares with another's.

A run's curve is its allocation % at each arrived level 0..top (`replay.RunResult.levels`).
Two policies are compared on the mean curves over the same seeds (so on the same pod
sequences): the difference at each arrival decile (10, 20, ... top), the worst of those, and
the area between the curves - the difference summed over every whole arrived level from 1 to
top, in points x arrived %, so a policy 0.5 points behind over 10 levels of arrival scores
-5.0 there.  The decile differences are what a cluster operator sees at a given load; the
area says whether one policy is ahead along the curve as a whole.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.tracesim.replay import RunResult


def mean_curve(results: Sequence[RunResult]) -> dict[int, float]:
    """Mean allocation % at each level every run reached."""
    common = set.intersection(*(set(r.levels) for r in results)) if results else set()
    return {lv: sum(r.levels[lv] for r in results) / len(results) for lv in sorted(common)}


def deciles(top: int) -> list[int]:
    """The arrival deciles up to `top`: 10, 20, ..., top rounded down to a multiple of 10."""
    return list(range(10, top + 1, 10))


@dataclass(frozen=True, slots=True)
class Gap:
    """`ours` minus `theirs`, in allocation points: at each decile, the worst decile, the area
    between the curves (points x arrived %), and at the last level."""

    by_decile: dict[int, float]
    worst: float
    worst_at: int
    area: float
    end: float


def gap(ours: Sequence[RunResult], theirs: Sequence[RunResult], top: int) -> Gap:
    """How the mean curve of `ours` compares with that of `theirs` (same seeds, same order)."""
    a, b = mean_curve(ours), mean_curve(theirs)
    diff = {lv: a[lv] - b[lv] for lv in a if lv in b}
    by_decile = {lv: diff[lv] for lv in deciles(top) if lv in diff}
    worst_at = min(by_decile, key=lambda lv: (by_decile[lv], lv))
    area = sum(d for lv, d in diff.items() if 1 <= lv <= top)
    return Gap(by_decile, by_decile[worst_at], worst_at, area, diff[max(diff)])
