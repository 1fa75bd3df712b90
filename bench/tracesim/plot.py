"""PNG figures of the allocation curves (`bench.trace_replay --plot DIR`), with matplotlib.

One figure per trace: allocation % against arrived workload % for every policy of the run,
and below it each policy's difference from the FGD replica (where the curves separate by
tenths of a point, which the full-scale panel cannot show).  And one grid of all traces,
each drawn where clusters run and the curves part: 50-130% arrived, plus Thaw minus FGD on
a second axis.  Curves are means over the run's seeds (`curves.mean_curve`).

matplotlib is imported only here, and only when a figure is drawn (the `bench` extra).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

Curves = Mapping[str, Mapping[str, Mapping[int, float]]]
"""trace -> policy -> arrived level -> mean allocation %."""

STYLE = {"thaw": ("tab:red", "-", 2.0), "fgd": ("tab:blue", "-", 1.5),
         "best-fit": ("tab:green", "--", 1.2), "packing": ("tab:purple", "--", 1.2),
         "first-fit": ("tab:gray", ":", 1.2)}
REFERENCE = "fgd"
GRID_FROM = 50
"""The grid shows arrived levels from here on: below it every policy places everything."""


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _line(ax, curve: Mapping[int, float], policy: str, **extra) -> None:
    color, dash, width = STYLE.get(policy, ("black", "-.", 1.0))
    levels = sorted(curve)
    ax.plot(levels, [curve[lv] for lv in levels], dash, color=color, linewidth=width,
            label=policy, **extra)


def _difference(curve: Mapping[int, float], reference: Mapping[int, float]) -> dict[int, float]:
    return {lv: curve[lv] - reference[lv] for lv in curve if lv in reference}


def _difference_limits(values) -> tuple[float, float]:
    """A symmetric axis of at least +-2 points, so that small gaps look small beside the
    allocation and a large lead is not clipped."""
    reach = max((abs(v) for v in values), default=0.0)
    edge = max(2.0, math.ceil(reach))
    return -edge, edge


def plot_trace(path: Path, trace: str, policies: Mapping[str, Mapping[int, float]],
               seeds: str) -> Path:
    """Write the figure of one trace to `path` (PNG) and return it."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    levels = sorted(next(iter(policies.values())))
    top.plot(levels, levels, color="0.8", linewidth=0.8, label="arrived (all placed)")
    for policy, curve in policies.items():
        _line(top, curve, policy)
    top.set_ylabel("GPU allocated, % of cluster")
    top.set_title(f"{trace}: allocation by arrived workload (mean of seeds {seeds})")
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    reference = policies.get(REFERENCE)
    if reference is not None:
        for policy, curve in policies.items():
            if policy != REFERENCE:
                _line(bottom, _difference(curve, reference), policy)
        bottom.axhline(0, color=STYLE[REFERENCE][0], linewidth=1.0)
        bottom.set_ylabel(f"minus {REFERENCE}, points")
        bottom.grid(alpha=0.3)
    bottom.set_xlabel("arrived workload, % of cluster GPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_grid(path: Path, curves: Curves, seeds: str, ours: str = "thaw") -> Path:
    """Write one panel per trace (50-130% arrived) to `path` (PNG) and return it."""
    plt = _pyplot()
    traces = list(curves)
    cols = 4 if len(traces) > 4 else len(traces)
    rows = math.ceil(len(traces) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, trace in zip(axes.flat, traces):
        policies = curves[trace]
        top = max(max(c) for c in policies.values())
        start = GRID_FROM if top > GRID_FROM else 0
        for policy, curve in policies.items():
            _line(ax, {lv: v for lv, v in curve.items() if lv >= start}, policy)
        ax.set_title(trace, fontsize=10)
        ax.set_xlim(start, top)
        ax.grid(alpha=0.3)
        if ours in policies and REFERENCE in policies and ours != REFERENCE:
            diff = _difference(policies[ours], policies[REFERENCE])
            twin = ax.twinx()
            levels = [lv for lv in sorted(diff) if lv >= start]
            twin.fill_between(levels, [diff[lv] for lv in levels], 0, color=STYLE[ours][0],
                              alpha=0.15, linewidth=0)
            twin.axhline(0, color="0.6", linewidth=0.6)
            twin.set_ylim(*_difference_limits(diff[lv] for lv in levels))
            twin.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(traces):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=10, frameon=False)
    fig.suptitle(f"GPU allocation % (left axis) by arrived workload %, mean of seeds {seeds}\n"
                 f"shaded: {ours} minus {REFERENCE}, points (right axis, at least -2..2)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_all(directory: Path, curves: Curves, seeds: str) -> list[Path]:
    """One figure per trace and the grid (`grid.png`) under `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [plot_trace(directory / f"{trace}.png", trace, policies, seeds)
               for trace, policies in curves.items()]
    written.append(plot_grid(directory / "grid.png", curves, seeds))
    return written
