"""What `bench.trace_replay` prints and saves: tables, curve gaps, speed ratio, CSV.

`rows` everywhere are (trace, policy, results), the results one `RunResult` per seed in the
run's seed order, so two policies' results for a trace are on the same pod sequences.
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

from bench.tracesim.curves import deciles, gap, mean_curve
from bench.tracesim.paper import OURS_TO_PAPER
from bench.tracesim.replay import RunResult
from placement.engine.policies import ALIASES

DECILE_TOLERANCE = 0.05
"""Points a decile may fall short of a baseline and still count as level (seed noise: the
standard error of a ten-seed mean near the knee of the curve is a few hundredths)."""
SPEED_REFERENCE = "fgd"


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def print_allocation_table(rows, paper, level: int, out=None) -> None:
    """Mean allocation at `level`, with the paper's FGD beside it, and the same policy's."""
    out = out or sys.stdout
    print(f"\nGPU allocation % at {level}% arrived workload (mean over seeds)", file=out)
    head = f"{'trace':<12} {'policy':<9} {'ours':>7} {'paper FGD':>9} {'vs FGD':>7} " \
           f"{'paper same':>10} {'vs same':>7} {'fails':>6}"
    print(head, file=out)
    print("-" * len(head), file=out)
    for trace, policy, results in rows:
        ours = mean(r.final for r in results)
        fgd = paper.get((trace, "FGD"))
        same = paper.get((trace, OURS_TO_PAPER.get(ALIASES.get(policy, policy), "")))
        fails = mean(r.failed for r in results)
        print(f"{trace:<12} {policy:<9} {ours:7.2f} {_fmt(fgd, 9)} {_diff(ours, fgd)} "
              f"{_fmt(same, 10)} {_diff(ours, same)} {fails:6.0f}", file=out)


def _fmt(value, width):
    return f"{value:{width}.2f}" if value is not None else " " * (width - 1) + "-"


def _diff(ours, theirs):
    return f"{ours - theirs:+7.2f}" if theirs is not None else "      -"


def print_curves(rows, top: int, out=None) -> None:
    """Mean allocation % at every arrival decile up to `top`, per (trace, policy)."""
    out = out or sys.stdout
    levels = deciles(top)
    print("\nGPU allocation % by arrived workload % (mean over seeds)", file=out)
    print(f"{'trace':<12} {'policy':<9} " + " ".join(f"{lv:>6}" for lv in levels), file=out)
    for trace, policy, results in rows:
        curve = mean_curve(results)
        print(f"{trace:<12} {policy:<9} "
              + " ".join(f"{curve[lv]:6.2f}" if lv in curve else "     -" for lv in levels),
              file=out)


def print_gaps(rows, ours: str, top: int, out=None) -> bool:
    """Per trace, `ours` against each other policy of the run: the worst decile difference
    (10%..top), where it is, the area between the mean curves and the difference at the end.
    Returns True when no decile is more than `DECILE_TOLERANCE` behind any baseline."""
    out = out or sys.stdout
    by_trace: dict[str, dict[str, list[RunResult]]] = defaultdict(dict)
    for trace, policy, results in rows:
        by_trace[trace][policy] = results
    baselines = [p for p in dict.fromkeys(p for _, p, _ in rows) if p != ours]
    if not baselines or not any(ours in runs for runs in by_trace.values()):
        return True
    print(f"\n{ours} minus each baseline, mean curves over the same seeds (points): worst "
          f"decile 10-{top}% arrived (@ where), area between the curves (points x arrived %, "
          f"levels 1-{top}), at {top}%; '!' = worst below -{DECILE_TOLERANCE}", file=out)
    print(f"{'trace':<12} " + " ".join(f"{b + ' worst':>16} {'area':>7} {'end':>6}"
                                       for b in baselines), file=out)
    level = True
    summary: dict[str, list] = defaultdict(list)
    for trace, runs in by_trace.items():
        if ours not in runs:
            continue
        cells = []
        for base in baselines:
            if base not in runs:
                cells.append(f"{'-':>16} {'-':>7} {'-':>6}")
                continue
            g = gap(runs[ours], runs[base], top)
            flag = "!" if g.worst < -DECILE_TOLERANCE else " "
            level = level and flag == " "
            summary[base].append(g)
            cells.append(f"{g.worst:+8.2f} @{g.worst_at:>3}%{flag} {g.area:+7.1f} {g.end:+6.2f}")
        print(f"{trace:<12} " + " ".join(cells), file=out)
    print(f"{'mean':<12} " + " ".join(
        f"{mean(g.worst for g in summary[b]):+8.2f}{'':7} {mean(g.area for g in summary[b]):+7.1f}"
        f" {mean(g.end for g in summary[b]):+6.2f}" if summary[b] else f"{'-':>31}"
        for b in baselines), file=out)
    return level


def decisions_per_s(results: list[RunResult]) -> float:
    """Decisions (placed or not) per second of `decide` CPU time over all `results`."""
    spent = sum(r.decide_s for r in results)
    return sum(r.placed + r.failed for r in results) / spent if spent else float("nan")


def print_speed_ratio(rows, ours: str, out=None) -> float | None:
    """Decisions/s of each policy over every replay of the run, `ours` over FGD's pooled, and
    per trace (the ratio varies by trace: each distinct request shape keeps its own ranking
    in Thaw, while FGD scores every node whatever the shape)."""
    out = out or sys.stdout
    pooled: dict[str, list[RunResult]] = defaultdict(list)
    by_trace: dict[str, dict[str, list[RunResult]]] = defaultdict(dict)
    for trace, policy, results in rows:
        pooled[policy].extend(results)
        by_trace[trace][policy] = results
    if len(pooled) < 2 and SPEED_REFERENCE not in pooled:
        return None
    rates = {policy: decisions_per_s(results) for policy, results in pooled.items()}
    print("\nDecisions per second in this run (CPU time of decide, all replays, the trace's "
          "nodes): " + ", ".join(f"{p} {r:,.0f}" for p, r in rates.items()), file=out)
    if ours not in rates or SPEED_REFERENCE not in rates:
        return None
    ratio = rates[ours] / rates[SPEED_REFERENCE]
    print(f"speed ratio {ours} / {SPEED_REFERENCE}: {ratio:.1f}x", file=out)
    per_trace = {trace: decisions_per_s(runs[ours]) / decisions_per_s(runs[SPEED_REFERENCE])
                 for trace, runs in by_trace.items() if ours in runs and SPEED_REFERENCE in runs}
    if len(per_trace) > 1:
        print("  by trace: " + ", ".join(f"{t} {r:.1f}x" for t, r in per_trace.items()),
              file=out)
    return ratio


def write_csv(path: Path, rows, seeds: list[int], top: int) -> None:
    """Every run's curve, one row per (trace, policy, seed); `read_csv` reads it back."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["workload", "policy", "seed", "placed", "failed", "decide_s"]
                        + [str(lv) for lv in range(top + 1)])
        for trace, policy, results in rows:
            for seed, r in zip(seeds, results):
                writer.writerow([trace, policy, seed, r.placed, r.failed, f"{r.decide_s:.4f}"]
                                + [f"{r.levels[lv]:.4f}" if lv in r.levels else ""
                                   for lv in range(top + 1)])


def read_csv(path: Path) -> dict[tuple[str, str, int], RunResult]:
    """(trace, policy, seed) -> the run `write_csv` saved."""
    runs = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            levels = {int(k): float(v) for k, v in row.items() if k.isdigit() and v}
            runs[(row["workload"], row["policy"], int(row["seed"]))] = RunResult(
                levels, int(row["placed"]), int(row["failed"]), float(row["decide_s"]))
    return runs
