"""Restores under a burst: many functions woken at once, and one function woken to many pods,
cold and then restored from snapshots, through the whole platform (`thaw up`), in one run.

Scenarios, each on functions of its own (examples/echo, CPU only, 1 core each; the node
declares 64 cores so placement is not what limits the burst):
- wake N functions at once (N = 1, 10, 30): first their cold starts (no snapshot yet), then,
  once each has a snapshot and has scaled to zero, the same burst again;
- one function from 0 to max_pods (3 and 8) with concurrency 1, so every call needs a pod of its
  own (each call holds its pod ECHO_DELAY_S): cold, then restored.
For each: time to first answer p50 / p99 / max per call, and how many pods were restored vs
fell back to a cold start (target: 0 fall-backs), from each pod's events.
Then the ratio the issue asks for: the slowest of 30 concurrent restores (the snapshotter's own
restore time, from the pod events) against 30 x one restore / cores, one restore being the
N = 1 scenario's, in this same run.

Each restored burst runs twice: with `restore = "eager"`, then redeployed with
`restore = "lazy"` (the snapshot stays usable: the restore mode is not part of the spec digest),
as the "restored-lazy" phase. Lazy restores of sandboxed workers need
`vm.unprivileged_userfaultfd = 1` (snapshotter/lazy_pages.py): the bench sets it for its run
and puts the old value back. The echo worker's image is small (tens of MiB), so these rows show
what a lazy daemon per restore costs under a burst; bench/restore_sizes.py shows what it buys.

Usage: sudo nice .venv/bin/python -m bench.restore_burst [--sizes 1,10,30] [--replicas 3,8]
       [--json PATH]
Needs root and CRIU (`infra/install-criu.sh`); run with nothing else busy.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import msgspec

from bench import soak_report as rep
from bench.soak import ECHO, Platform
from thaw.functions_file import load_function_file
from thaw.launcher import operator_creds
from thaw_core.store import events
from thaw_core.store.client import connect_redis
from thaw_core.store.pods import Pods
from thaw_core.store.snapshots import SnapshotCatalog

# Long enough for every function's first warm pod to be dumped before it scales to zero: a
# node dumps one worker at a time, and a pod gone before its turn leaves its function without
# a snapshot until its next cold start.
IDLE_TIMEOUT_S = 20
HOLD_S = 1.0  # how long one call holds its pod in the replica scenarios
RESTORE_IN = re.compile(r"in ([0-9.]+)s")


def say(msg: str) -> None:
    print(f"[restore-burst] {msg}", flush=True)


@dataclass
class Wake:
    """One call of a burst: how long to its answer, and how its pod came up."""

    fn: str
    status: int
    first_answer_s: float
    pod: str
    outcome: str = ""
    restore_s: float = 0.0  # the snapshotter's own time, for a restored pod
    lazy: bool = False  # restored with a lazy-pages daemon
    detail: str = ""


@dataclass
class Scenario:
    name: str
    phase: str  # "cold" | "restored" (eager) | "restored-lazy"
    wakes: list[Wake] = field(default_factory=list)

    def latencies(self) -> list[float]:
        return sorted(w.first_answer_s for w in self.wakes if w.status == 200)

    def row(self) -> dict:
        lat = self.latencies()
        pods = {w.pod: w for w in self.wakes if w.pod}
        return {"scenario": self.name, "phase": self.phase, "calls": len(self.wakes), "ok": len(lat),
                "p50_s": round(statistics.median(lat), 3) if lat else None,
                "p99_s": round(_percentile(lat, 0.99), 3) if lat else None,
                "max_s": round(lat[-1], 3) if lat else None, "pods": len(pods),
                "restored": sum(w.outcome == rep.RESTORED for w in pods.values()),
                "fell_back": sum(w.outcome == rep.FELL_BACK for w in pods.values()),
                "cold": sum(w.outcome == rep.COLD for w in pods.values()),
                "lazy": sum(w.lazy for w in pods.values())}


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


UNPRIVILEGED_UFFD = Path("/proc/sys/vm/unprivileged_userfaultfd")


def spec(name: str, max_pods: int = 1, concurrency: int = 4, hold_s: float = 0.0, restore: str = "eager") -> dict:
    s = msgspec.to_builtins(load_function_file(ECHO))
    s["name"], s["snapshot"], s["restore"] = name, True, restore
    s["env"] = {"ECHO_DELAY_S": str(hold_s)} if hold_s else {}
    s["resources"].update(gpu_count=0, vram_mib=0, cpu_milli=1000, memory_mib=128)
    s["scaling"].update(min_pods=0, max_pods=max_pods, concurrency=concurrency, idle_timeout_s=IDLE_TIMEOUT_S,
                        start_timeout_s=120)
    return s


class Bench:
    def __init__(self, platform: Platform, http: aiohttp.ClientSession):
        self.p, self.http = platform, http
        self.r = connect_redis(platform.redis_url, operator_creds(platform.state_dir))

    async def deploy(self, s: dict) -> None:
        async with self.http.post(self.p.gateway_url + "/v1/functions", json=s) as resp:
            if resp.status != 201:
                raise RuntimeError(f"deploy {s['name']}: {resp.status} {await resp.text()}")

    async def call(self, fn: str, t0: float) -> Wake:
        url = f"{self.p.gateway_url}/v1/functions/{fn}/invoke"
        try:
            async with self.http.post(url, data=b'{"burst": 1}', headers={"Content-Type": "application/json"},
                                      timeout=aiohttp.ClientTimeout(total=180)) as resp:
                body = await resp.read()
                return Wake(fn, resp.status, time.monotonic() - t0, resp.headers.get("Thaw-Pod", ""),
                            detail="" if resp.status == 200 else body[:200].decode(errors="replace"))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Wake(fn, 0, time.monotonic() - t0, "", detail=f"{type(exc).__name__}: {exc}"[:200])

    async def burst(self, calls: list[str], scenario: Scenario) -> Scenario:
        t0 = time.monotonic()
        scenario.wakes = list(await asyncio.gather(*(self.call(fn, t0) for fn in calls)))
        for w in scenario.wakes:
            if w.pod:
                evs = await events.read(self.r, w.pod)
                w.outcome = rep.classify_wake(evs)
                restored = next((e for e in evs if e.get("event") == "restored"), None)
                if restored and (m := RESTORE_IN.search(restored.get("detail", ""))):
                    w.restore_s = float(m.group(1))
                w.lazy = bool(restored) and "s, lazy" in restored.get("detail", "")
        return scenario

    async def settle(self, fns: list[str], timeout_s: float = 300) -> None:
        """Until every function has a snapshot and no pods left."""
        deadline = time.monotonic() + timeout_s
        catalog, pods = SnapshotCatalog(self.r), Pods(self.r)
        waiting = list(fns)
        while waiting and time.monotonic() < deadline:
            waiting = [fn for fn in waiting if not await catalog.for_function(fn) or await pods.live(fn)]
            await asyncio.sleep(0.5)
        if waiting:
            raise RuntimeError(f"no snapshot or not scaled to zero within {timeout_s}s: {', '.join(waiting)}")

    async def wake_many(self, n: int) -> list[Scenario]:
        fns = [f"b{n}-{i}" for i in range(n)]
        for fn in fns:
            await self.deploy(spec(fn))
        say(f"{n} function(s): cold burst")
        cold = await self.burst(fns, Scenario(f"{n} functions at once", "cold"))
        await self.settle(fns)
        say(f"{n} function(s): restored burst")
        restored = await self.burst(fns, Scenario(f"{n} functions at once", "restored"))
        await self.settle(fns)
        for fn in fns:
            await self.deploy(spec(fn, restore="lazy"))
        say(f"{n} function(s): restored burst, lazily")
        lazy = await self.burst(fns, Scenario(f"{n} functions at once", "restored-lazy"))
        await self.settle(fns)
        return [cold, restored, lazy]

    async def scale_out(self, k: int) -> list[Scenario]:
        fn = f"r{k}"
        await self.deploy(spec(fn, max_pods=k, concurrency=1, hold_s=HOLD_S))
        say(f"one function to {k} pods: cold")
        cold = await self.burst([fn] * k, Scenario(f"1 function, 0 -> {k} pods", "cold"))
        await self.settle([fn])
        say(f"one function to {k} pods: restored")
        restored = await self.burst([fn] * k, Scenario(f"1 function, 0 -> {k} pods", "restored"))
        await self.settle([fn])
        await self.deploy(spec(fn, max_pods=k, concurrency=1, hold_s=HOLD_S, restore="lazy"))
        say(f"one function to {k} pods: restored, lazily")
        lazy = await self.burst([fn] * k, Scenario(f"1 function, 0 -> {k} pods", "restored-lazy"))
        await self.settle([fn])
        return [cold, restored, lazy]

    async def close(self) -> None:
        await self.r.aclose()


def parallel_ratio(scenarios: list[Scenario]) -> dict | None:
    """Slowest of the 30-function restores / (30 x the single restore / cores)."""
    single = next((s for s in scenarios if s.name == "1 functions at once" and s.phase == "restored"), None)
    many = next((s for s in scenarios if s.name == "30 functions at once" and s.phase == "restored"), None)
    if single is None or many is None:
        return None
    one = [w.restore_s for w in single.wakes if w.restore_s]
    all_30 = [w.restore_s for w in many.wakes if w.restore_s]
    if not one or not all_30:
        return None
    cores = os.cpu_count() or 1
    budget = len(all_30) * one[0] / cores
    return {"one_restore_s": one[0], "restores": len(all_30), "cores": cores, "slowest_s": max(all_30),
            "budget_s": round(budget, 3), "ratio": round(max(all_30) / budget, 2)}


def print_report(scenarios: list[Scenario], ratio: dict | None) -> None:
    print("\n| scenario | phase | calls ok | first answer p50 / p99 / max (s) | pods | restored (lazily) "
          "| fell back | cold |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in scenarios:
        r = s.row()
        print(f"| {r['scenario']} | {r['phase']} | {r['ok']}/{r['calls']} | {r['p50_s']} / {r['p99_s']} / "
              f"{r['max_s']} | {r['pods']} | {r['restored']} ({r['lazy']}) | {r['fell_back']} | {r['cold']} |")
    for s in scenarios:
        for w in s.wakes:
            if w.status != 200 or w.outcome == rep.FELL_BACK:
                print(f"  {s.name} ({s.phase}): {w.fn} {w.status} {w.outcome} {w.detail}")
    if ratio:
        print(f"\n30 concurrent restores: slowest {ratio['slowest_s']:.3f}s against 30 x one restore "
              f"({ratio['one_restore_s']:.3f}s) / {ratio['cores']} cores = {ratio['budget_s']:.3f}s: "
              f"ratio {ratio['ratio']:.2f} (target <= 1.5)")
    restored = [s.row() for s in scenarios if s.phase.startswith("restored")]
    fell = sum(r["fell_back"] + r["cold"] for r in restored)
    print(f"fall-backs to a cold start in the restored bursts: {fell} (target 0)")


async def run(args) -> int:
    state = Path(tempfile.mkdtemp(prefix="thaw-burst-"))
    platform = Platform(state / "state", f"burst-{os.urandom(2).hex()}")
    (state / "state").mkdir()
    say(f"starting thaw up in {state}")
    uffd_before = UNPRIVILEGED_UFFD.read_text()
    UNPRIVILEGED_UFFD.write_text("1\n")
    platform.start(extra_config="cpu_milli = 64000\n")
    scenarios: list[Scenario] = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {platform.key}"},
                                         connector=aiohttp.TCPConnector(limit=0)) as http:
            bench = Bench(platform, http)
            try:
                for n in args.sizes:
                    scenarios += await bench.wake_many(n)
                for k in args.replicas:
                    scenarios += await bench.scale_out(k)
            finally:
                await bench.close()
    finally:
        clean, leftovers = platform.stop()
        UNPRIVILEGED_UFFD.write_text(uffd_before)
        say(f"thaw up stopped ({'clean' if clean else 'not clean'}; {len(leftovers)} leftover processes killed)")
    ratio = parallel_ratio(scenarios)
    print_report(scenarios, ratio)
    if args.json:
        Path(args.json).write_text(json.dumps({"scenarios": [s.row() for s in scenarios], "ratio": ratio,
                                               "wakes": [[asdict(w) for w in s.wakes] for s in scenarios]}, indent=1))
    return 0


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.restore_burst", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,10,30", help="functions woken at once, per scenario")
    p.add_argument("--replicas", default="3,8", help="pods of one function woken at once, per scenario")
    p.add_argument("--json", help="write the rows and every call here")
    a = p.parse_args()
    a.sizes = [int(x) for x in a.sizes.split(",") if x]
    a.replicas = [int(x) for x in a.replicas.split(",") if x]
    sys.exit(asyncio.run(run(a)))


if __name__ == "__main__":
    main()
