"""Comparing allocation curves (`bench.tracesim.curves`): deciles, worst decile, area."""
from __future__ import annotations

import pytest

from bench.tracesim.curves import deciles, gap, mean_curve
from bench.tracesim.replay import RunResult


def run(curve: dict[int, float]) -> RunResult:
    return RunResult(curve, placed=0, failed=0, decide_s=1.0)


def line(top: int, offset: float = 0.0, dip: tuple[int, int, float] = (0, 0, 0.0)) -> RunResult:
    """allocation = arrived + offset, minus `dip`[2] points on levels dip[0]..dip[1]."""
    lo, hi, depth = dip
    return run({lv: lv + offset - (depth if lo <= lv <= hi else 0.0) for lv in range(top + 1)})


def test_the_mean_curve_averages_seeds_on_the_levels_every_run_reached():
    assert mean_curve([run({0: 0.0, 1: 1.0, 2: 2.0}), run({0: 1.0, 1: 2.0})]) == {0: 0.5, 1: 1.5}


def test_deciles_run_from_ten_percent_to_the_top():
    assert deciles(130) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130]
    assert deciles(95) == [10, 20, 30, 40, 50, 60, 70, 80, 90]


@pytest.mark.parametrize(
    ("ours", "theirs", "worst", "worst_at", "area", "end"),
    [
        # level everywhere: nothing between the curves
        ([line(130)], [line(130)], 0.0, 10, 0.0, 0.0),
        # behind by 1.5 points from 85% to 95% arrived: worst at the 90% decile, area 11 levels
        ([line(130, dip=(85, 95, 1.5))], [line(130)], -1.5, 90, -16.5, 0.0),
        # ahead at the end only: the worst decile is level (the first one is named)
        ([line(130, dip=(130, 130, -0.5))], [line(130)], 0.0, 10, 0.5, 0.5),
        # seeds are averaged before comparing: one seed 1 point behind of two is 0.5
        ([line(100, dip=(50, 50, 1.0)), line(100)], [line(100), line(100)], -0.5, 50, -0.5, 0.0),
    ],
)
def test_gap_names_the_worst_decile_and_the_area_between_the_curves(
        ours, theirs, worst, worst_at, area, end):
    g = gap(ours, theirs, top=max(ours[0].levels))
    assert (g.worst, g.worst_at, g.end) == (pytest.approx(worst), worst_at, pytest.approx(end))
    assert g.area == pytest.approx(area)


def test_area_leaves_out_level_zero():
    g = gap([line(20, dip=(0, 0, 3.0))], [line(20)], top=20)
    assert g.area == 0.0
