"""Warm-path overhead, side by side in one run: the echo worker called directly, through the
gateway's HTTP bridge, and through NATS `infer.request.echo`.

Two phases per path: latency (one call in flight; p50/p99 of the added time) and throughput
(many in flight for a fixed time; requests/s). Ratios are taken against the direct path
measured in the same run, because absolute numbers on a shared 2-core machine are only hints.

    .venv/bin/python -m bench.warm_path [--seconds 5] [--in-flight 64] [--latency-calls 2000]
"""

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import nats
import uvloop

from thaw.client import Gateway
from thaw.launcher import ensure_api_key, up

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BODY = b'{"input": "hello from the benchmark"}'


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def http_caller(url: str, headers: dict, client: str):
    """A keep-alive HTTP client. "lean" (default) is the raw httptools client the gateway itself
    uses, so the load generator's own cost stays small beside the servers it measures; "aiohttp"
    is a general client costing more per call than the echo worker does."""
    if client == "aiohttp":
        session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0))

        async def call() -> None:
            async with session.post(url, data=BODY) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered {resp.status}")
        return call, session.close
    from urllib.parse import urlsplit

    from gateway.upstream import Upstream

    parts = urlsplit(url)
    endpoint, path = f"http://{parts.netloc}", parts.path or "/"
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    client_ = Upstream()

    async def call() -> None:
        status, _, _ = await client_.post(endpoint, path, BODY, "application/json", 10, extra)
        if status != 200:
            raise RuntimeError(f"{url} answered {status}")

    async def close() -> None:
        client_.close()
    return call, close


async def nats_caller(nats_url: str, key: str):
    nc = await nats.connect(nats_url)
    headers = {"Authorization": f"Bearer {key}"}

    async def call() -> None:
        msg = await nc.request("infer.request.echo", BODY, timeout=10, headers=headers)
        if msg.headers.get("Thaw-Status") != "200":
            raise RuntimeError(f"NATS reply {msg.headers}")
    return call, nc.close


async def latency(call, n: int) -> list[float]:
    for _ in range(50):
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(call, in_flight: int, seconds: float) -> tuple[float, list[float]]:
    stop_at = time.perf_counter() + seconds
    lat: list[float] = []

    async def loop() -> None:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            await call()
            lat.append((time.perf_counter() - t) * 1000)
    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(in_flight)))
    return len(lat) / (time.perf_counter() - started), lat


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_all(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_s(pid) for name, pid in pids.items()}


async def measure(args, endpoint: str, gateway_url: str, nats_url: str, key: str, pids: dict[str, int]) -> dict:
    """Rounds alternate the paths (direct, gateway-http, gateway-nats, direct, ...) so load that
    changes over time on a shared machine falls on every path alike; each figure is the median
    over rounds."""
    auth = {"Authorization": f"Bearer {key}"}
    callers = {
        "direct": await http_caller(endpoint + "/", {}, args.client),
        "gateway-http": await http_caller(f"{gateway_url}/v1/functions/echo/invoke", auth, args.client),
        "gateway-nats": await nats_caller(nats_url, key),
    }
    rounds: dict[str, list[dict]] = {name: [] for name in callers}
    try:
        for i in range(args.rounds):
            order = list(callers) if i % 2 == 0 else list(reversed(callers))
            for name in order:
                call = callers[name][0]
                lat = await latency(call, args.latency_calls)
                before = cpu_all(pids)
                rps, loaded = await throughput(call, args.in_flight, args.seconds)
                used = {k: v - before[k] for k, v in cpu_all(pids).items()}
                cpu_us = {f"{k}_us_per_call": 1e6 * v / len(loaded) for k, v in used.items()}
                rounds[name].append({"p50_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99), "rps": rps,
                                     "loaded_p50_ms": statistics.median(loaded), "loaded_p99_ms": pct(loaded, 0.99),
                                     **cpu_us})
                print(f"  round {i + 1}/{args.rounds} {name}: {rps:,.0f} req/s, p50 {rounds[name][-1]['p50_ms']:.3f} ms",
                      flush=True)
    finally:
        for _, close in callers.values():
            await close()
    return {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rounds.items()}





def report(results: dict) -> None:
    direct = results["direct"]
    print()
    print("medians over rounds")
    print(f"{'path':<14}{'req/s':>10}{'x direct':>10}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}"
          f"{'loaded p50':>12}{'loaded p99':>12}")
    for name, r in results.items():
        print(f"{name:<14}{r['rps']:>10,.0f}{r['rps'] / direct['rps']:>10.2f}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
              f"{r['p50_ms'] - direct['p50_ms']:>9.3f}{r['loaded_p50_ms']:>12.2f}{r['loaded_p99_ms']:>12.2f}")
    print()
    print("CPU time per call (us), same phases: what each process spends on one call")
    print(f"{'path':<14}{'loadgen':>9}{'gateway':>9}{'worker':>9}{'nats-srv':>9}")
    for name, r in results.items():
        print(f"{name:<14}{r['loadgen_us_per_call']:>9.0f}{r['gateway_us_per_call']:>9.0f}"
              f"{r['worker_us_per_call']:>9.0f}{r['nats_us_per_call']:>9.0f}")
    gw = results["gateway-http"]
    print()
    print(f"targets: gateway throughput >= 0.70x direct: {gw['rps'] / direct['rps']:.2f}x "
          f"({'met' if gw['rps'] / direct['rps'] >= 0.7 else 'NOT met'}); "
          f"added p50 <= 1 ms: {gw['p50_ms'] - direct['p50_ms']:.3f} ms "
          f"({'met' if gw['p50_ms'] - direct['p50_ms'] <= 1 else 'NOT met'})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="throughput phase length per path and round")
    p.add_argument("--rounds", type=int, default=5, help="rounds, alternating the order of the paths")
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--latency-calls", type=int, default=1000, help="calls one at a time, per path and round")
    p.add_argument("--client", choices=("lean", "aiohttp"), default="lean",
                   help="HTTP load generator: lean (raw httptools keep-alive client) or aiohttp")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="thaw-bench-") as tmp:
        print("[bench] starting the platform (nats-server, valkey-server, placement, agent, gateway)", flush=True)
        platform = up(Path(tmp), None, _free())
        try:
            key = ensure_api_key(Path(tmp), platform.redis.url)
            gw = Gateway(platform.gateway_url, key)
            spec = {"name": "echo", "command": ["{python}", str(EXAMPLES / "echo" / "worker.py")],
                    "resources": {"vram_mib": 1024, "cpu_milli": 100, "memory_mib": 128},
                    "scaling": {"max_pods": 1, "concurrency": 256, "idle_timeout_s": 3600, "max_queue": 4096}}
            gw.json("POST", "/v1/functions", spec)
            status, _, _ = gw.call("POST", "/v1/functions/echo/invoke", BODY)
            assert status == 200, status
            [pod] = gw.json("GET", "/v1/pods")["pods"]
            pids = {"loadgen": os.getpid(), "gateway": platform.procs["gateway"].pid,
                    "worker": int(pod["runtime_ref"].split(":")[0]), "nats": platform.nats.process.pid}
            print(f"[bench] echo worker warm at {pod['endpoint']}; {args.client} HTTP client; "
                  f"{args.rounds} rounds x 3 paths, "
                  f"{args.latency_calls} calls one at a time then {args.seconds:g}s with {args.in_flight} in flight",
                  flush=True)
            # The load generator shares the two cores with what it measures; uvloop keeps its own
            # cost per call low (as a load generator on another machine would), on every path alike.
            results = uvloop.run(measure(args, pod["endpoint"], platform.gateway_url, platform.nats.url, key, pids))
        finally:
            platform.stop()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _free() -> int:
    from thaw_core.ports import free_port

    return free_port()


if __name__ == "__main__":
    main()
