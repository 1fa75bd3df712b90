"""Warm-path overhead, side by side in one run: the echo worker called directly, through the
gateway's HTTP bridge, and through NATS `infer.request.echo`.

Two phases per path: latency (one call in flight; p50/p99 of the added time) and throughput
(many in flight for a fixed time; requests/s). Ratios are taken against the direct path
measured in the same run, because absolute numbers on a shared 2-core machine are only hints.

The load generator shares the two cores with what it measures, so its own cost per call moves
the ratios: the default drives connections from callbacks, as wrk does (`bench/http_load.py`);
`--client coroutines` (a coroutine per call) and `--client aiohttp` cost it more, and are kept
to show how much.

    .venv/bin/python -m bench.warm_path [--client callbacks|coroutines|aiohttp] [--seconds 5]
        [--in-flight 64] [--latency-calls 2000]
"""

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import nats
import uvloop

from bench.http_load import ClosedLoop
from thaw.client import Gateway
from bus_schemas import permissions
from thaw.launcher import bus_credentials, ensure_api_key, up

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BODY = b'{"input": "hello from the benchmark"}'


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


class Caller:
    """One path under load: `latency(n)` makes n calls one at a time, `throughput(k, s)` keeps k
    calls in flight for s seconds; both return latencies in ms (throughput also calls/s)."""

    async def latency(self, n: int) -> list[float]:
        raise NotImplementedError

    async def throughput(self, in_flight: int, seconds: float) -> tuple[float, list[float]]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class CallbackHttp(Caller):
    """The default HTTP load: `bench.http_load`, wrk-style connections driven by callbacks."""

    def __init__(self, url: str, headers: dict):
        parts = urlsplit(url)
        self._load = ClosedLoop(parts.hostname, parts.port, parts.path or "/", BODY, headers)

    async def latency(self, n: int) -> list[float]:
        await self._load.run(1, max_calls=50)
        return (await self._load.run(1, max_calls=n))[1]

    async def throughput(self, in_flight: int, seconds: float) -> tuple[float, list[float]]:
        return await self._load.run(in_flight, seconds)

    async def close(self) -> None:
        self._load.close()


class CoroutineCaller(Caller):
    """A coroutine per call, `in_flight` coroutines calling in a loop."""

    def __init__(self, call, close):
        self._call, self._close = call, close

    async def latency(self, n: int) -> list[float]:
        for _ in range(50):
            await self._call()
        out = []
        for _ in range(n):
            t = time.perf_counter()
            await self._call()
            out.append((time.perf_counter() - t) * 1000)
        return out

    async def throughput(self, in_flight: int, seconds: float) -> tuple[float, list[float]]:
        stop_at = time.perf_counter() + seconds
        lat: list[float] = []

        async def loop() -> None:
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                await self._call()
                lat.append((time.perf_counter() - t) * 1000)
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(in_flight)))
        return len(lat) / (time.perf_counter() - started), lat

    async def close(self) -> None:
        await self._close()


async def http_caller(url: str, headers: dict, client: str) -> Caller:
    """HTTP load of the kind `client` names: "callbacks" (default, see CallbackHttp),
    "coroutines" (a coroutine per call over the gateway's own raw keep-alive client) or
    "aiohttp" (a general client costing more per call than the echo worker does)."""
    if client == "callbacks":
        return CallbackHttp(url, headers)
    if client == "aiohttp":
        session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0))

        async def call() -> None:
            async with session.post(url, data=BODY) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered {resp.status}")
        return CoroutineCaller(call, session.close)
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
    return CoroutineCaller(call, close)


class CallbackNats(Caller):
    """NATS load in the same style: `in_flight` request slots, each with its own reply subject,
    publishing its next request from the subscription callback that received the last reply."""

    def __init__(self, nc, key: str):
        self._nc = nc
        self._headers = {"Authorization": f"Bearer {key}"}
        self._inbox = nc.new_inbox()
        self._sub = None
        self._run: dict | None = None

    async def _send(self, slot: int) -> None:
        run = self._run
        run["sent_at"][slot] = time.perf_counter()
        await self._nc.publish("infer.request.echo", BODY, reply=f"{self._inbox}.{slot}", headers=self._headers)

    async def _on_reply(self, msg) -> None:
        now = time.perf_counter()
        run = self._run
        slot = int(msg.subject.rsplit(".", 1)[1])
        run["latencies"].append((now - run["sent_at"][slot]) * 1000)
        if msg.headers is None or msg.headers.get("Thaw-Status") != "200":
            run["stop_at"] = 0.0
            if not run["done"].done():
                run["done"].set_exception(RuntimeError(f"NATS reply {msg.headers}"))
        elif now < run["stop_at"] and len(run["latencies"]) < run["max_calls"]:
            await self._send(slot)
        else:
            run["running"] -= 1
            if run["running"] == 0 and not run["done"].done():
                run["done"].set_result(None)

    async def _go(self, in_flight: int, seconds: float, max_calls: float) -> tuple[float, list[float]]:
        if self._sub is None:
            self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        self._run = run = {"sent_at": [0.0] * in_flight, "latencies": [], "stop_at": time.perf_counter() + seconds,
                           "max_calls": max_calls, "running": in_flight,
                           "done": asyncio.get_running_loop().create_future()}
        started = time.perf_counter()
        for slot in range(in_flight):
            await self._send(slot)
        await asyncio.wait_for(run["done"], seconds + 30)
        return len(run["latencies"]) / (time.perf_counter() - started), run["latencies"]

    async def latency(self, n: int) -> list[float]:
        await self._go(1, 3600, 50)
        return (await self._go(1, 3600, n))[1]

    async def throughput(self, in_flight: int, seconds: float) -> tuple[float, list[float]]:
        return await self._go(in_flight, seconds, float("inf"))

    async def close(self) -> None:
        await self._nc.close()


async def nats_caller(nats_url: str, key: str, client: str, options: dict) -> Caller:
    """NATS load: callbacks (as CallbackHttp) unless `client` asks for a coroutine per call;
    `options`: the platform's `client` bus user (thaw up's bus lets no one in without one)."""
    nc = await nats.connect(nats_url, **options)
    if client == "callbacks":
        return CallbackNats(nc, key)
    headers = {"Authorization": f"Bearer {key}"}

    async def call() -> None:
        msg = await nc.request("infer.request.echo", BODY, timeout=10, headers=headers)
        if msg.headers.get("Thaw-Status") != "200":
            raise RuntimeError(f"NATS reply {msg.headers}")
    return CoroutineCaller(call, nc.close)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_all(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_s(pid) for name, pid in pids.items()}


async def measure(args, endpoint: str, gateway_url: str, nats_url: str, key: str, pids: dict[str, int],
                  nats_options: dict) -> dict:
    """Rounds alternate the paths (direct, gateway-http, gateway-nats, direct, ...) so load that
    changes over time on a shared machine falls on every path alike; each figure is the median
    over rounds."""
    auth = {"Authorization": f"Bearer {key}"}
    callers = {
        "direct": await http_caller(endpoint + "/", {}, args.client),
        "gateway-http": await http_caller(f"{gateway_url}/v1/functions/echo/invoke", auth, args.client),
        "gateway-nats": await nats_caller(nats_url, key, args.client, nats_options),
    }
    rounds: dict[str, list[dict]] = {name: [] for name in callers}
    try:
        for i in range(args.rounds):
            order = list(callers) if i % 2 == 0 else list(reversed(callers))
            for name in order:
                caller = callers[name]
                lat = await caller.latency(args.latency_calls)
                before = cpu_all(pids)
                rps, loaded = await caller.throughput(args.in_flight, args.seconds)
                used = {k: v - before[k] for k, v in cpu_all(pids).items()}
                cpu_us = {f"{k}_us_per_call": 1e6 * v / len(loaded) for k, v in used.items()}
                rounds[name].append({"p50_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99), "rps": rps,
                                     "loaded_p50_ms": statistics.median(loaded), "loaded_p99_ms": pct(loaded, 0.99),
                                     **cpu_us})
                print(f"  round {i + 1}/{args.rounds} {name}: {rps:,.0f} req/s, p50 {rounds[name][-1]['p50_ms']:.3f} ms",
                      flush=True)
    finally:
        for caller in callers.values():
            await caller.close()
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
    p.add_argument("--client", choices=("callbacks", "coroutines", "aiohttp"), default="callbacks",
                   help="HTTP load generator: callbacks (wrk-style), coroutines (one per call, over a raw "
                        "keep-alive client) or aiohttp")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="thaw-bench-") as tmp:
        print("[bench] starting the platform (nats-server, valkey-server, placement, agent, gateway)", flush=True)
        platform = up(Path(tmp), None, _free())
        try:
            key = ensure_api_key(Path(tmp), platform.redis.url)
            gw = Gateway(platform.gateway_url, key)
            spec = {"name": "echo", "command": ["{python}", str(EXAMPLES / "echo" / "worker.py")],
                    # one core: the worker's cgroup holds it to cpu_milli, and direct calls must
                    # find it as free as the gateway's do
                    "resources": {"vram_mib": 1024, "cpu_milli": 1000, "memory_mib": 128},
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
            client = bus_credentials(Path(tmp), permissions.CLIENT)
            results = uvloop.run(measure(args, pod["endpoint"], platform.gateway_url, platform.nats.url, key, pids,
                                         client.connect_options() if client else {}))
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
