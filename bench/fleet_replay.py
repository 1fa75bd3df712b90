"""Fleet replay: the trace replay of bench/trace_replay.py, through the real system.

    python -m bench.fleet_replay --trace default --seed 42 --arrival 130 --workers 1,2,3
    python -m bench.fleet_replay --nodes 40 --workers 1 --profile /tmp/prof   # a quick look
    python -m bench.fleet_replay --throughput-requests 2000 --workers 1 --live ""   # throughput only

For each run, fresh servers as `thaw up` starts them (a bus user per role and per node, the
operator provisioning the streams, a store user per role: bench/fleet/servers.py), the real
placement worker processes (`python -m placement`), and the trace's 1,213 nodes as simulated
agents in this process, each on its own connection as its own bus user, reporting capacity and
heartbeats and taking its pods through pending -> starting -> idle in the store
(bench/fleet/agents.py). The pods of the offline replay's run (same trace, seed and arrival:
`tracesim/arrival.py`) are deployed as one function each and asked for with a
`LeaseRequested` apiece on the bus, as the gateway asks (bench/fleet/requests.py).

One `queued` run per --workers count (every request in the stream before the workers take the
first), and one `live` run per --live count (the requests published as fast as the bus takes
them while the workers place them; bench/fleet/run.py says why both):
- placements per second from the resume (queued) or the first request published (live) to the
  last `place.assigned` the agents received, against the 1,000/s target and as a ratio to one
  worker's in the same mode, with the CPU each role used meanwhile (the workers share this
  host with the servers, the simulated fleet and, live, the publisher);
- the GPU allocation at the final arrived level, computed from the store's committed
  reservations. One worker decides in stream order (bench/fleet/run.py), so its allocation
  (the queued run's, else the live one's) must be within --tolerance points (0.2) of the
  offline replay's (`tracesim/replay.py`, run here with the same seed and policy): exit 1
  otherwise, or when a request got neither a pod nor an unplaceable record. Several workers interleave, so theirs may differ; it is printed,
  not checked. `--paced` checks a run with one request in flight at a time instead.

What is not the platform's own: the simulated agents share one placement consumer instead of a
durable each, the fleet's capacity is in the store before the workers start, each GPU reports
32,000 MiB, the learned workload starts from the trace's counts (each is explained in the
module that does it), and this process (the agents and the publisher) runs with the gateway's
GC settings (`main`). Only two things differ from the offline replay's input, and neither
changes a decision: vRAM sizes (it never binds) and a 16 MiB memory floor (one pod).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench.fleet.run import Outcome, run_once
from bench.tracesim.arrival import arrival_sequence
from bench.tracesim.replay import RunResult, replay
from bench.tracesim.trace import data_dir, load_nodes, load_pods, trace_file
from placement.engine import WorkloadProfile
from thaw_core.process import tune_gc_for_throughput

TARGET_PER_S = 1000.0


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def offline(nodes, requests, trace, policy: str) -> RunResult:
    """bench.trace_replay's replay of the same run."""
    return replay(nodes, requests, policy, WorkloadProfile.from_requests(trace), None)


def check_allocation(found: Outcome, expected: RunResult, tolerance: float, out=sys.stdout) -> bool:
    """Print the in-system allocation beside the offline one; True when within `tolerance`."""
    diff = found.final - expected.final
    ok = abs(diff) <= tolerance and not found.unanswered
    print(f"\nGPU allocation at {max(found.levels)}% arrived (mean over that level's pods, as trace_replay):",
          file=out)
    print(f"  offline replay   {expected.final:7.3f}%  ({expected.placed} placed, {expected.failed} unplaceable)",
          file=out)
    print(f"  through Thaw     {found.final:7.3f}%  ({found.placed} placed, {found.requests - found.placed} "
          f"unplaceable; ledger at the end {found.allocation_end_pct:.3f}%)", file=out)
    print(f"  difference       {diff:+7.3f} points (limit {tolerance:g}): {'ok' if abs(diff) <= tolerance else 'FAIL'}",
          file=out)
    print(f"  requests answered: {found.requests - len(found.unanswered)}/{found.requests}"
          + (f"  FAIL: no answer for {found.unanswered[:5]}" if found.unanswered else ""), file=out)
    lost = found.assigned - found.placed
    print(f"  pods placed and later reclaimed (a departure the offline replay has not): {lost}"
          + ("  FAIL" if lost else ""), file=out)
    return ok and not lost


def print_throughput(runs: list[Outcome], expected: RunResult, out=sys.stdout) -> None:
    print("\nPlacements per second, end to end (queued: the consumer resumed, live: the first request published "
          "-> the last place.assigned at the agents):", file=out)
    total = expected.placed + expected.failed
    if any(r.requests < total for r in runs):
        print(f"(first {runs[0].requests} of the {total} requests asked for; allocation is of those, "
              "not comparable with the offline end point)", file=out)
    print(f"{'mode':>6} {'workers':>7} {'placed':>7} {'seconds':>8} {'placed/s':>9} {'vs 1':>6} {'decisions/s':>12} "
          f"{'allocation':>11} {'vs offline':>11} {'reclaimed':>9}", file=out)
    for r in runs:
        base = one_worker_rate(runs, r.queued)
        ratio = f"{r.placements_per_s / base:5.2f}x" if base else "   -"
        versus = f"{r.final - expected.final:+10.3f}" if r.requests == total else f"{'-':>10}"
        print(f"{mode(r):>6} {r.workers:7d} {r.placed:7d} {r.placement_s:8.1f} {r.placements_per_s:9.0f} {ratio:>6} "
              f"{r.decisions_per_s:12.0f} {r.final:10.3f}% {versus} {r.assigned - r.placed:9d}", file=out)
    for queued in (True, False):
        base = one_worker_rate(runs, queued)
        if base is not None:
            met = "met" if base >= TARGET_PER_S else "NOT met"
            print(f"target >= {TARGET_PER_S:,.0f} placements/s with one worker, {'queued' if queued else 'live'}: "
                  f"{met} ({base:,.0f}/s)", file=out)
    print_cpu(runs, out)


def mode(run: Outcome) -> str:
    return "queued" if run.queued else "live"


def one_worker_rate(runs: list[Outcome], queued: bool) -> float | None:
    return next((r.placements_per_s for r in runs if r.workers == 1 and r.queued == queued), None)


def print_cpu(runs: list[Outcome], out=sys.stdout) -> None:
    """Where the host's CPU went meanwhile: the workers share it with the servers and the
    simulated fleet, so end-to-end placements/s is bounded by the host as much as by a worker."""
    print(f"\nCPU used from the first request to the last assignment (% of one core; this host has "
          f"{os.cpu_count()} cores):", file=out)
    groups = list(runs[0].cpu_s) if runs else []
    print(f"{'mode':>6} {'workers':>7} " + " ".join(f"{g:>18}" for g in groups) + f" {'all':>6} "
          f"{'placed/worker CPU-s':>20}", file=out)
    for r in runs:
        shares = [100 * r.cpu_s[g] / r.cpu_window_s for g in groups]
        print(f"{mode(r):>6} {r.workers:7d} " + " ".join(f"{s:17.0f}%" for s in shares) + f" {sum(shares):5.0f}%"
              f" {r.placements_per_worker_cpu_s:20.0f}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", default="default", help="trace name (default, cpu050, ...) or pod CSV")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--arrival", type=float, default=130, help="arrived workload, %% of GPU")
    parser.add_argument("--policy", default="thaw")
    parser.add_argument("--workers", default="1,2,3", help="placement workers per queued throughput run")
    parser.add_argument("--live", default="1", help="placement workers per live throughput run (\"\": none)")
    parser.add_argument("--nodes", type=int, default=0, help="the trace's first N nodes only (0: all)")
    parser.add_argument("--tolerance", type=float, default=0.2, help="allowed allocation difference, points")
    parser.add_argument("--no-allocation-run", action="store_true", help="check no allocation (throughput only)")
    parser.add_argument("--paced", action="store_true",
                        help="check the allocation on a run of its own with one request in flight at a time")
    parser.add_argument("--throughput-requests", type=int, default=0, metavar="N",
                        help="throughput runs ask for the first N pods only (every function still deployed)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the workers under cProfile; <run>/placement-N.prof here")
    parser.add_argument("--state", type=Path, help="where the runs' servers keep state (default: a temp dir)")
    parser.add_argument("--data", help="trace directory (default: shared/data/gpu-sharing-trace)")
    args = parser.parse_args(argv)

    directory = data_dir(args.data)
    nodes = load_nodes(directory)
    nodes = nodes[:args.nodes] if args.nodes else nodes
    trace = [p.request for p in load_pods(trace_file(directory, args.trace))]
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    requests = arrival_sequence(load_pods(trace_file(directory, args.trace)), capacity, args.arrival,
                                random.Random(args.seed))
    expected = offline(nodes, requests, trace, args.policy)
    say(f"{args.trace}, seed {args.seed}, {args.policy}: {len(requests)} requests to {args.arrival:g}% "
        f"on {len(nodes)} nodes; offline replay {expected.final:.3f}%")
    # This process is the load: the fleet's agents and the gateways' requests, sharing the host's
    # cores with the platform. It runs with the GC settings of the gateway whose requests it
    # publishes, so that less of the host goes to it (live runs: ~1,000 against ~950 placements/s).
    tune_gc_for_throughput()
    state = args.state or Path(tempfile.mkdtemp(prefix="fleet-replay-"))
    ok = True

    def one(name: str, workers: int, paced: bool, limit: int = 0, queued: bool = False) -> Outcome:
        how = "paced" if paced else "queued" if queued else "live"
        say(f"\n== {name}: {workers} worker(s), {how} ==")
        t = time.monotonic()
        profile = args.profile / name if args.profile else None
        if profile:
            profile.mkdir(parents=True, exist_ok=True)
        found = run_once(state / name, nodes, requests, trace, args.policy, workers, say, paced=paced,
                         profile_dir=profile, limit=limit, queued=queued)
        say(f"== {name} done in {time.monotonic() - t:.0f}s: {found.placed} placed, {found.final:.3f}%, "
            f"{found.placements_per_s:.0f} placed/s")
        return found

    runs = [one(f"queued-{n}", n, paced=False, limit=args.throughput_requests, queued=True)
            for n in (int(w) for w in args.workers.split(",") if w)]
    runs += [one(f"live-{n}", n, paced=False, limit=args.throughput_requests)
             for n in (int(w) for w in args.live.split(",") if w)]
    if runs:
        print_throughput(runs, expected)
        ok = not any(r.unanswered for r in runs)
    if not args.no_allocation_run:
        whole = sorted((r for r in runs if r.workers == 1 and r.requests == len(requests)), key=lambda r: not r.queued)
        checked = whole[0] if whole and not args.paced else one("allocation", 1, paced=args.paced)
        ok = check_allocation(checked, expected, args.tolerance) and ok
    print(f"\nstate and logs: {state}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
