"""Trace replay of the FGD paper's experiment (ATC'23) against Thaw's placement engine.

    python -m bench.trace_replay --trace default --policy thaw,fgd --seeds 42-51 --arrival 130
    python -m bench.trace_replay --all-traces --policy thaw,fgd --csv out.csv --plot figures/
    python -m bench.trace_replay --trace default --policy best-fit,packing,fgd   # validation
    python -m bench.trace_replay --speed --policy thaw,fgd

For each trace, policy and seed: the trace's pods are shuffled and tuned to `--arrival` % of
the cluster's GPU capacity (`tracesim/arrival.py`), placed in order with no departures, and
the GPU allocation ratio is recorded at each arrived level (`tracesim/replay.py`).  Every
policy of a run replays the same pod sequences.  Printed: the mean over seeds at the final
level beside the paper's FGD (and, for the baselines, the paper's figure for the same
policy), the mean curve at every decile, Thaw's curve against each other policy of the run
(worst decile, area between the curves, end point: `tracesim/curves.py`), and decisions per
second with Thaw's ratio to the FGD replica's.  `--csv` writes every run's curve, `--load`
reads such files back instead of replaying what they hold, `--plot DIR` draws the curves
(`tracesim/plot.py`, needs matplotlib: the `bench` extra).  `--speed` times whole replays
on the trace's 1,213 nodes and on synthetic fleets of 10,000 and 30,000 nodes with the same
node mix.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from bench.tracesim.arrival import arrival_sequence
from bench.tracesim.curves import mean_curve
from bench.tracesim.fleet import scaled_fleet
from bench.tracesim.paper import paper_means
from bench.tracesim.replay import RunResult, replay
from bench.tracesim.report import (mean, print_allocation_table, print_curves, print_gaps,
                                   print_speed_ratio, read_csv, write_csv)
from bench.tracesim.trace import PAPER_FILE, TRACES, data_dir, load_nodes, load_pods, trace_file
from placement.engine import POLICIES, WorkloadProfile
from placement.engine.policies import ALIASES

OURS = "thaw"


def parse_seeds(text: str) -> list[int]:
    """"42-51" or "42,45" or "42" -> seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def parse_policies(text: str) -> list[str]:
    names = list(POLICIES) if text == "all" else [p.strip() for p in text.split(",")]
    for name in names:
        if name not in POLICIES and name not in ALIASES:
            raise SystemExit(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return names


def run_trace(directory: Path, trace: str, policy: str, seeds: list[int], arrival: float,
              nodes=None, saved=None) -> list[RunResult]:
    """One replay per seed of `trace` under `policy` (runs found in `saved` are reused)."""
    nodes = nodes or load_nodes(directory)
    pods = load_pods(trace_file(directory, trace))
    profile = WorkloadProfile.from_requests(p.request for p in pods)
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    results = []
    for seed in seeds:
        found = (saved or {}).get((trace, policy, seed))
        if found is None:
            requests = arrival_sequence(pods, capacity, arrival, random.Random(seed))
            found = replay(nodes, requests, policy, profile, None)
        results.append(found)
    return results


def speed(directory: Path, policies: list[str], sizes: list[int], seed: int, arrival: float,
          out=None) -> None:
    """Decisions per second over whole replays of the default trace at each fleet size."""
    out = out or sys.stdout
    base = load_nodes(directory)
    print(f"\nDecisions per second (default trace, seed {seed}, replay to {arrival:g}%, "
          "one core; includes unplaceable decisions)", file=out)
    print(f"{'policy':<9} {'nodes':>7} {'decisions':>10} {'seconds':>8} {'per second':>11}",
          file=out)
    rows = []
    for policy in policies:
        for size in sizes:
            nodes = base if size == len(base) else scaled_fleet(base, size)
            [r] = run_trace(directory, "default", policy, [seed], arrival, nodes)
            n = r.placed + r.failed
            print(f"{policy:<9} {size:7d} {n:10d} {r.decide_s:8.1f} {n / r.decide_s:11.0f}",
                  file=out, flush=True)
            if size == len(base):
                rows.append(("default", policy, [r]))
    print_speed_ratio(rows, OURS, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", default="default",
                        help="trace name (default, cpu050, ...) or pod CSV; comma-separated")
    parser.add_argument("--all-traces", action="store_true", help="the paper's 17 traces")
    parser.add_argument("--policy", default="thaw,fgd",
                        help=f"comma-separated, or all: {POLICIES}")
    parser.add_argument("--seeds", default="42-51", help="e.g. 42-51 or 42,43")
    parser.add_argument("--arrival", type=float, default=130, help="arrived workload, %% of GPU")
    parser.add_argument("--csv", type=Path, help="write every run's curve here")
    parser.add_argument("--load", type=Path, action="append", default=[],
                        help="reuse the runs saved in this --csv file (repeatable)")
    parser.add_argument("--plot", type=Path, metavar="DIR",
                        help="draw the curves as PNG here: one per trace and grid.png")
    parser.add_argument("--speed", action="store_true", help="decisions/s by fleet size")
    parser.add_argument("--sizes", default="1213,10000,30000", help="fleet sizes for --speed")
    parser.add_argument("--data", help="trace directory (default: shared/data/gpu-sharing-trace)")
    args = parser.parse_args(argv)

    directory = data_dir(args.data)
    policies = parse_policies(args.policy)
    seeds = parse_seeds(args.seeds)
    if args.speed:
        speed(directory, policies, [int(s) for s in args.sizes.split(",")], seeds[0],
              args.arrival)
        return 0
    traces = list(TRACES) if args.all_traces else args.trace.split(",")
    saved = {}
    for path in args.load:
        saved.update(read_csv(path))
    top = int(args.arrival)
    paper = paper_means(directory / PAPER_FILE, level=top, seeds=set(seeds))
    nodes = load_nodes(directory)
    rows = []
    for trace in traces:
        for policy in policies:
            results = run_trace(directory, trace, policy, seeds, args.arrival, nodes, saved)
            rows.append((trace, policy, results))
            print(f"  {trace} {policy}: {mean(x.final for x in results):.2f}",
                  file=sys.stderr, flush=True)
    print_allocation_table(rows, paper, top)
    print_curves(rows, top)
    print_gaps(rows, OURS, top)
    print_speed_ratio(rows, OURS)
    if args.csv:
        write_csv(args.csv, rows, seeds, top)
        print(f"\nwrote {args.csv}")
    if args.plot:
        from bench.tracesim.plot import plot_all
        curves: dict = {}
        for trace, policy, results in rows:
            curves.setdefault(trace, {})[policy] = mean_curve(results)
        written = plot_all(args.plot, curves, args.seeds)
        print(f"wrote {len(written)} figures to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
