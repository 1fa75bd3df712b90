"""Trace replay of the FGD paper's experiment (ATC'23) against Thaw's placement engine.

    python -m bench.trace_replay --trace default --policy thaw --seeds 42-51 --arrival 130
    python -m bench.trace_replay --all-traces --policy thaw --csv out.csv
    python -m bench.trace_replay --trace default --policy best-fit,packing,fgd   # validation
    python -m bench.trace_replay --speed --policy thaw

For each trace, policy and seed: the trace's pods are shuffled and tuned to `--arrival` % of
the cluster's GPU capacity (`tracesim/arrival.py`), placed in order with no departures, and
the GPU allocation ratio is recorded at each arrived level (`tracesim/replay.py`).  Printed:
the mean over seeds at the final level beside the paper's FGD (and, for the baselines, the
paper's figure for the same policy), the mean curve every 10 points, and decisions per second.
`--csv` writes every run's curve.  `--speed` times whole replays on the trace's 1,213 nodes
and on synthetic fleets of 10,000 and 30,000 nodes with the same node mix.
"""
from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

from bench.tracesim.arrival import arrival_sequence
from bench.tracesim.fleet import scaled_fleet
from bench.tracesim.paper import OURS_TO_PAPER, paper_means
from bench.tracesim.replay import RunResult, replay
from bench.tracesim.trace import PAPER_FILE, TRACES, data_dir, load_nodes, load_pods, trace_file
from placement.engine import POLICIES, WorkloadProfile
from placement.engine.policies import ALIASES


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
              nodes=None) -> list[RunResult]:
    """One replay per seed of `trace` under `policy`."""
    nodes = nodes or load_nodes(directory)
    pods = load_pods(trace_file(directory, trace))
    profile = WorkloadProfile.from_requests(p.request for p in pods)
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    results = []
    for seed in seeds:
        requests = arrival_sequence(pods, capacity, arrival, random.Random(seed))
        results.append(replay(nodes, requests, policy, profile, None))
    return results


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def print_allocation_table(rows, paper, level: int, out=sys.stdout) -> None:
    """rows: (trace, policy, results).  Paper FGD beside each, and the same policy's."""
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


def print_curves(rows, top: int, out=sys.stdout) -> None:
    """Mean allocation % at every 10th arrived level up to `top`, per (trace, policy)."""
    levels = list(range(10, top + 1, 10))
    print("\nGPU allocation % by arrived workload % (mean over seeds)", file=out)
    print(f"{'trace':<12} {'policy':<9} " + " ".join(f"{lv:>6}" for lv in levels), file=out)
    for trace, policy, results in rows:
        cells = [mean(r.levels[lv] for r in results if lv in r.levels) for lv in levels]
        print(f"{trace:<12} {policy:<9} " + " ".join(f"{c:6.2f}" for c in cells), file=out)


def write_csv(path: Path, rows, seeds: list[int], arrival: float) -> None:
    top = int(arrival)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["workload", "policy", "seed", "placed", "failed", "decisions_per_s"]
                        + [str(lv) for lv in range(top + 1)])
        for trace, policy, results in rows:
            for seed, r in zip(seeds, results):
                rate = (r.placed + r.failed) / r.decide_s if r.decide_s else 0
                writer.writerow([trace, policy, seed, r.placed, r.failed, f"{rate:.0f}"]
                                + [f"{r.levels[lv]:.2f}" if lv in r.levels else ""
                                   for lv in range(top + 1)])


def speed(directory: Path, policies: list[str], sizes: list[int], seed: int, arrival: float,
          out=sys.stdout) -> None:
    """Decisions per second over whole replays of the default trace at each fleet size."""
    base = load_nodes(directory)
    print(f"\nDecisions per second (default trace, seed {seed}, replay to {arrival:g}%, "
          "one core; includes unplaceable decisions)", file=out)
    print(f"{'policy':<9} {'nodes':>7} {'decisions':>10} {'seconds':>8} {'per second':>11}",
          file=out)
    for policy in policies:
        for size in sizes:
            nodes = base if size == len(base) else scaled_fleet(base, size)
            [r] = run_trace(directory, "default", policy, [seed], arrival, nodes)
            n = r.placed + r.failed
            print(f"{policy:<9} {size:7d} {n:10d} {r.decide_s:8.1f} {n / r.decide_s:11.0f}",
                  file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", default="default",
                        help="trace name (default, cpu050, ...) or pod CSV; comma-separated")
    parser.add_argument("--all-traces", action="store_true", help="the paper's 17 traces")
    parser.add_argument("--policy", default="thaw", help=f"comma-separated, or all: {POLICIES}")
    parser.add_argument("--seeds", default="42-51", help="e.g. 42-51 or 42,43")
    parser.add_argument("--arrival", type=float, default=130, help="arrived workload, %% of GPU")
    parser.add_argument("--csv", type=Path, help="write every run's curve here")
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
    paper = paper_means(directory / PAPER_FILE, level=int(args.arrival), seeds=set(seeds))
    nodes = load_nodes(directory)
    rows = []
    for trace in traces:
        for policy in policies:
            results = run_trace(directory, trace, policy, seeds, args.arrival, nodes)
            rows.append((trace, policy, results))
            r = results[-1]
            print(f"  {trace} {policy}: {mean(x.final for x in results):.2f} "
                  f"({(r.placed + r.failed) / r.decide_s:.0f} decisions/s)",
                  file=sys.stderr, flush=True)
    print_allocation_table(rows, paper, int(args.arrival))
    print_curves(rows, int(args.arrival))
    if args.csv:
        write_csv(args.csv, rows, seeds, args.arrival)
        print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
