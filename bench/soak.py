"""Soak: many scale-to-zero wake-ups through the whole platform, the way users run it.

Starts `thaw up` (own state dir, own node name, mock GPUs), deploys K copies of examples/echo
that scale to zero after 2 s idle and snapshot their first warm worker, then for --duration-s
wakes each function again and again with C concurrent calls, waits until it has no pods, and
wakes it again. Each wake-up is classified from its pod's events (restored / restore fell back
to cold / plain cold). Every 2-10 s (more often in a short run, so growth is judged on windows
of samples, not on two single ones) it samples each service's open fds and RSS, Redis keys and
JetStream bytes; it prints a progress line every ~10 s. Optional chaos (--kill-every-s) kill -9s
one service in rotation. At the end it stops `thaw up` with SIGINT, prints a report with PASS/FAIL per
target (bench/soak_report.py) and exits non-zero when one fails.

Usage: [sudo] nice .venv/bin/python -m bench.soak [--duration-s 600] [--functions 3]
       [--concurrency 4] [--call-timeout-s 60] [--kill-every-s 0] [--recovery-s 30] [--json PATH]
Snapshots need root and CRIU (`infra/install-criu.sh`); without them every wake-up is cold and
the restored target fails, as it should.
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import msgspec
import nats
from redis.exceptions import RedisError

from bench import soak_report as rep
from thaw.client import Gateway
from thaw.functions_file import load_function_file
from thaw.launcher import bus_credentials, operator_creds
from thaw_core.ports import free_port
from thaw_core.store import events
from thaw_core.store.client import connect_redis
from thaw_core.store.pods import Pods
from thaw_core.store.snapshots import SnapshotCatalog

REPO = Path(__file__).resolve().parents[1]
ECHO = REPO / "examples" / "echo" / "function.toml"
CHAOS_ROTATION = ("gateway", "placement", "agent", "snapshotter")
PROGRESS_EVERY_S = 10.0
IDLE_TIMEOUT_S = 2
WARMUP_SHARE = 0.2  # growth is measured from the first sample after this share of the run


def sample_every_s(duration_s: float) -> float:
    """Ten seconds apart in a long run; in a short one, ~30 samples over the run (at least 2 s
    apart), so the growth windows of soak_report hold several samples each."""
    return min(10.0, max(2.0, duration_s / 30))


def say(msg: str) -> None:
    print(f"[soak] {msg}", flush=True)


class Platform:
    """`thaw up` as a subprocess in its own process group, its output collected by a thread."""

    def __init__(self, state_dir: Path, node: str):
        self.state_dir, self.node = state_dir, node
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.gateway_url = self.nats_url = self.redis_url = self.key = ""

    def start(self, timeout_s: float = 90, extra_config: str = "") -> None:
        """`extra_config`: more `[node]` lines (TOML) for the node config."""
        config = self.state_dir.parent / "node.toml"
        config.write_text(f'[node]\nname = "{self.node}"\nforce_mock_gpus = true\n{extra_config}')
        port = free_port()
        thaw = Path(sys.executable).parent / "thaw"
        self.proc = subprocess.Popen(
            [str(thaw), "--state-dir", str(self.state_dir), "up", "--port", str(port), "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        ready = threading.Event()
        threading.Thread(target=self._collect, args=(ready,), daemon=True).start()
        if not ready.wait(timeout_s) or self.proc.poll() is not None:
            raise RuntimeError("thaw up did not print its `up: HTTP` line:\n" + "".join(self.lines[-30:]))
        self.gateway_url = f"http://127.0.0.1:{port}"
        self.nats_url = self._printed(r"nats-server ready at (\S+)")
        self.redis_url = self._printed(r"valkey-server ready at (\S+)")
        self.key = (self.state_dir / "credentials").read_text().strip()

    def _collect(self, ready: threading.Event) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if "up: HTTP" in line:
                ready.set()
        ready.set()  # it exited: let start() see that

    def _printed(self, pattern: str) -> str:
        for line in self.lines:
            if m := re.search(pattern, line):
                return m.group(1)
        raise RuntimeError(f"thaw up did not print /{pattern}/")

    def exited(self) -> str:
        """Why thaw up is gone, or "" while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return ""
        tail = " | ".join(line.strip() for line in self.lines[-3:])
        return f"thaw up exited with code {self.proc.returncode}: {tail}"

    def stop(self, timeout_s: float = 90) -> tuple[bool, list[int]]:
        """SIGINT to its process group (Ctrl-C), wait; (clean exit, pids of ours left over, killed)."""
        clean = False
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout_s)
                clean = self.proc.returncode == 0
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        leftovers = self._leftovers()
        for pid in leftovers:
            _kill(pid, signal.SIGKILL)
        return clean, leftovers

    def _leftovers(self) -> list[int]:
        """Processes of this platform: naming its state dir, or workers of its node."""
        marker = f"THAW_NODE={self.node}".encode()
        found = []
        for pid, cmdline in _processes():
            if str(self.state_dir) in cmdline or marker in _environ(pid):
                found.append(pid)
        return [p for p in found if p != os.getpid()]


def _processes() -> list[tuple[int, str]]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out.append((int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
            except OSError:
                pass
    return out


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def services(state_dir: Path, up_pid: int) -> dict[str, tuple[int, int | None]]:
    """Service name -> (pid, restarts): from thaw up's `run/components.json`, else found by
    command line (restarts then None)."""
    return services_from_status(state_dir / "run" / "components.json") or services_found(state_dir, up_pid)


def services_from_status(path: Path) -> dict[str, tuple[int, int | None]]:
    """What thaw up's supervisor wrote: {"components": {name: {"pid", "restarts", ...}}}; {} if unreadable."""
    try:
        data = json.loads(path.read_text())
        return {n: (int(c["pid"]), int(c.get("restarts", 0))) for n, c in data["components"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def services_found(state_dir: Path, up_pid: int) -> dict[str, tuple[int, None]]:
    """Services among thaw up's children and the processes naming the state dir (gateway and
    placement do not name it), known by their command lines."""
    found: dict[str, list[int]] = {}
    for pid, cmdline in _processes():
        if _ppid(pid) == up_pid or str(state_dir) in cmdline:
            if name := service_of(cmdline):
                found.setdefault(name, []).append(pid)
    # A forked helper keeps its parent's command line: the service is the one whose parent is not it.
    return {name: (min(pids, key=lambda p: _ppid(p) in pids), None) for name, pids in found.items()}


def service_of(cmdline: str) -> str:
    """Which service a command line runs, or ""."""
    argv = cmdline.split()
    if argv and argv[0].endswith("nats-server"):
        return "nats-server"
    if argv and "valkey-server" in argv[0]:
        return "valkey-server"
    for module, name in (("gateway", "gateway"), ("placement", "placement"), ("agents", "agent"),
                         ("snapshotter", "snapshotter")):
        if f"-m {module} " in cmdline + " ":
            return name
    return ""


def proc_sample(name: str, pid: int, restarts: int | None) -> rep.ProcSample | None:
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None  # it died between listing and sampling
    rss = re.search(r"VmRSS:\s+(\d+)", status)
    if rss is None:
        return None  # a zombie (killed, not yet reaped): nothing left to measure
    return rep.ProcSample(name, pid, fds, int(rss.group(1)), restarts)


def echo_spec(name: str) -> dict:
    """examples/echo as a soak function: one pod per wake-up, 2 s idle to zero, snapshots on."""
    spec = msgspec.to_builtins(load_function_file(ECHO))
    spec["name"], spec["snapshot"] = name, True
    spec["resources"].update(vram_mib=256, cpu_milli=100, memory_mib=128)
    spec["scaling"].update(min_pods=0, max_pods=1, concurrency=4, idle_timeout_s=IDLE_TIMEOUT_S, start_timeout_s=30)
    return spec


class Soak:
    """The run's records, and the tasks that make them."""

    def __init__(self, args, platform: Platform, functions: list[str]):
        self.a, self.p, self.functions = args, platform, functions
        self.calls: list[rep.Call] = []
        self.wakes: list[rep.WakeUp] = []
        self.kills: list[rep.Kill] = []
        self.samples: list[rep.Sample] = []
        self.snapshot_seen: set[str] = set()
        self.exited = ""
        self.t0 = time.monotonic()
        self.end = self.t0 + args.duration_s

    def now(self) -> float:
        return time.monotonic() - self.t0

    def running(self) -> bool:
        return time.monotonic() < self.end and not self.exited

    async def run(self) -> None:
        self.r = connect_redis(self.p.redis_url, operator_creds(self.p.state_dir))  # thaw up's store has users
        operator = bus_credentials(self.p.state_dir, "operator")
        self.nc = await nats.connect(self.p.nats_url, max_reconnect_attempts=-1,
                                     **(operator.connect_options() if operator else {}))
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.p.key}"},
                                          connector=aiohttp.TCPConnector(limit=0))
        try:
            background = [asyncio.create_task(t) for t in (self.sampler(), self.chaos(), self.watch())]
            await asyncio.gather(*(self.cycle(fn) for fn in self.functions))
            for t in background:
                t.cancel()
            await self.sample()  # the end sample
        finally:
            await self.http.close()
            await self.nc.close()
            await self.r.aclose()

    async def cycle(self, fn: str) -> None:
        while self.running():
            wake = await self.wake(fn)
            if self.running() and wake.pod and random.random() < 0.5:
                await self.warm_calls(fn)
            if self.running():
                wake = await self.wait_zero(fn, wake)
            self.wakes.append(wake)

    async def wake(self, fn: str) -> rep.WakeUp:
        """C calls at once at a function with no pods; its pod from the first answer."""
        after_snapshot = await self.has_snapshot(fn)
        started = self.now()
        burst = await asyncio.gather(*(self.call(fn, "wake") for _ in range(self.a.concurrency)))
        answered = sorted((c for c in burst if c.ok), key=lambda c: c.ended_s)
        if not answered:
            pod, detail = await self.unanswered_pod(fn)
            return rep.WakeUp(fn, started, rep.NO_ANSWER, after_snapshot, pod=pod, detail=detail)
        pod = answered[0].pod
        evs = await self.pod_events(pod)
        return rep.WakeUp(fn, started, rep.classify_wake(evs), after_snapshot, answered[0].ended_s - started, pod,
                          rep.fallback_reason(evs))

    async def has_snapshot(self, fn: str) -> bool:
        """Whether `fn` has had a snapshot by now (one dropped later still counts: the function
        had one to restore from)."""
        if fn not in self.snapshot_seen:
            try:
                if await SnapshotCatalog(self.r).for_function(fn):
                    self.snapshot_seen.add(fn)
            except (OSError, RedisError) as exc:
                say(f"snapshot catalog unreadable: {exc}")
        return fn in self.snapshot_seen

    async def unanswered_pod(self, fn: str) -> tuple[str, str]:
        """A wake-up nobody answered: the function's live pod now, its state and events, so the
        report says where it was stuck (e.g. restoring from a snapshotter that never answers)."""
        try:
            live = await Pods(self.r).live(fn)
        except (OSError, RedisError):
            live = []
        if not live:
            return "", "no answer and no live pod"
        pod = live[0]
        evs = "; ".join(f"{e.get('event')}: {e.get('detail', '')}" for e in await self.pod_events(pod.pod))
        return pod.pod, f"no answer; pod {pod.pod} is {pod.state.value}" + (f" ({evs})" if evs else "")

    async def pod_events(self, pod: str) -> list[dict]:
        try:
            return await events.read(self.r, pod)
        except (OSError, RedisError) as exc:
            say(f"events of {pod} unreadable: {exc}")
            return []

    async def call(self, fn: str, kind: str) -> rep.Call:
        started = self.now()
        url = f"{self.p.gateway_url}/v1/functions/{fn}/invoke"
        try:
            async with asyncio.timeout(self.a.call_timeout_s):
                async with self.http.post(url, data=b'{"soak": 1}', headers={"Content-Type": "application/json"}) as resp:
                    body = await resp.read()
                    call = rep.Call(fn, kind, started, self.now(), resp.status, pod=resp.headers.get("Thaw-Pod", ""),
                                    detail="" if resp.status < 300 else body[:200].decode(errors="replace"))
        except TimeoutError:
            call = rep.Call(fn, kind, started, self.now(), 0, hung=True, detail=f"no answer in {self.a.call_timeout_s}s")
        except (aiohttp.ClientError, OSError) as exc:
            call = rep.Call(fn, kind, started, self.now(), 0, detail=f"{type(exc).__name__}: {exc}"[:200])
        self.calls.append(call)
        return call

    async def warm_calls(self, fn: str) -> None:
        for _ in range(random.randint(1, 3)):
            await asyncio.sleep(random.uniform(0.05, 0.5))
            await self.call(fn, "warm")

    async def wait_zero(self, fn: str, wake: rep.WakeUp) -> rep.WakeUp:
        """Poll GET /v1/pods until `fn` has none; bounded by --zero-timeout-s."""
        started = self.now()
        deadline = time.monotonic() + self.a.zero_timeout_s
        while time.monotonic() < deadline and not self.exited:
            try:
                async with self.http.get(f"{self.p.gateway_url}/v1/pods") as resp:
                    if resp.status == 200 and not any(p["fn"] == fn for p in (await resp.json())["pods"] or []):
                        return replace(wake, scaled_to_zero=True, zero_wait_s=self.now() - started)
            except (aiohttp.ClientError, OSError, ValueError):
                pass  # the gateway may be down (chaos): keep asking
            await asyncio.sleep(0.25)
        say(f"{fn} still has pods {self.a.zero_timeout_s:g}s after its wake-up answered")
        return replace(wake, scaled_to_zero=False, zero_wait_s=self.now() - started)

    async def sampler(self) -> None:
        every_s, said_at = sample_every_s(self.a.duration_s), self.now()
        while True:
            await asyncio.sleep(every_s)
            await self.sample()
            if self.now() - said_at >= PROGRESS_EVERY_S - every_s / 2:
                said_at = self.now()
                say(rep.progress_line(said_at, self.calls, self.wakes))

    async def sample(self) -> None:
        procs = [proc_sample(n, pid, restarts) for n, (pid, restarts) in services(self.p.state_dir, self.p.proc.pid).items()]
        keys, no_ttl, kinds = await self.redis_sample()
        self.samples.append(rep.Sample(self.now(), tuple(p for p in procs if p), keys, no_ttl, kinds,
                                       await self.js_bytes()))

    async def redis_sample(self) -> tuple[int | None, int | None, dict[str, int]]:
        """DBSIZE, keys without a TTL, and a count per key kind ("(ttl)" marks kinds that expire)."""
        try:
            size = await self.r.dbsize()
            keys = [k async for k in self.r.scan_iter(count=1000)]
            async with self.r.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.ttl(k)
                ttls = await pipe.execute()
        except (OSError, RedisError) as exc:
            say(f"Redis unreadable: {exc}")
            return None, None, {}
        kinds: dict[str, int] = {}
        for k, ttl in zip(keys, ttls):
            kind = rep.key_kind(k if isinstance(k, str) else k.decode()) + (" (ttl)" if ttl >= 0 else "")
            kinds[kind] = kinds.get(kind, 0) + 1
        return size, sum(1 for t in ttls if t == -1), kinds

    async def js_bytes(self) -> int | None:
        try:
            info = await self.nc.jetstream().account_info()
            return info.memory + info.storage
        except Exception as exc:  # noqa: BLE001 (any failure is "not sampled", said once here)
            say(f"JetStream account info unreadable: {exc!r}")
            return None

    async def chaos(self) -> None:
        """Every --kill-every-s, kill -9 the next service in CHAOS_ROTATION."""
        if self.a.kill_every_s <= 0:
            return
        for i in range(10**9):
            await asyncio.sleep(self.a.kill_every_s)
            name = CHAOS_ROTATION[i % len(CHAOS_ROTATION)]
            pid = services(self.p.state_dir, self.p.proc.pid).get(name, (0, None))[0]
            if pid:
                _kill(pid, signal.SIGKILL)
                self.kills.append(rep.Kill(self.now(), name, pid))
                say(f"chaos: kill -9 {name} (pid {pid})")
            else:
                say(f"chaos: no {name} to kill")

    async def watch(self) -> None:
        while not self.exited:
            await asyncio.sleep(0.5)
            self.exited = self.p.exited()
        say(f"stopping early: {self.exited}")


def deploy(platform: Platform, count: int) -> list[str]:
    gw = Gateway(platform.gateway_url, platform.key, timeout_s=30)
    suffix = os.urandom(2).hex()
    names = [f"soak-{suffix}-{i}" for i in range(count)]
    for name in names:
        gw.json("POST", "/v1/functions", echo_spec(name))
    return names


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration-s", type=float, default=600)
    ap.add_argument("--functions", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4, help="calls that wake a function at once")
    ap.add_argument("--call-timeout-s", type=float, default=60, help="a call not answered by then is hung")
    ap.add_argument("--zero-timeout-s", type=float, default=60, help="a function with pods this long after "
                                                                      "its wake-up did not scale to zero")
    ap.add_argument("--kill-every-s", type=float, default=0, help="chaos: kill -9 a service this often (0: off)")
    ap.add_argument("--recovery-s", type=float, default=30, help="errors this soon after a kill count apart")
    ap.add_argument("--json", type=Path, help="also write every number here")
    ap.add_argument("--keep-state", action="store_true", help="keep the state dir (logs) even on PASS")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="thaw-soak-"))
    platform = Platform(root / "state", f"soak-{os.urandom(3).hex()}")
    try:
        say(f"starting thaw up in {platform.state_dir} (node {platform.node}) ...")
        platform.start()
        functions = deploy(platform, args.functions)
        say(f"deployed {', '.join(functions)}; soaking for {args.duration_s:g}s")
        if 0 < args.kill_every_s <= args.recovery_s:
            say(f"note: kills every {args.kill_every_s:g}s with {args.recovery_s:g}s recovery windows leave no time "
                "outside a window: few wake-ups will be judged")
        soak = Soak(args, platform, functions)
        try:
            asyncio.run(soak.run())
        except KeyboardInterrupt:
            soak.exited = soak.exited or f"interrupted (Ctrl-C) at {soak.now():.0f}s"
    finally:
        say("stopping thaw up (SIGINT to its process group) ...")
        clean, leftovers = platform.stop()
    summary = rep.summarize(run_facts(args, soak, clean, leftovers), soak.calls, soak.wakes, soak.kills, soak.samples)
    print(rep.format_report(summary), flush=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if summary["passed"] and not args.keep_state:
        shutil.rmtree(root, ignore_errors=True)
    else:
        say(f"state and logs kept in {root}")
    return 0 if summary["passed"] else 1


def run_facts(args, soak: Soak, clean: bool, leftovers: list[int]) -> rep.RunFacts:
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return rep.RunFacts(functions=soak.functions, duration_s=args.duration_s, warmup_s=WARMUP_SHARE * args.duration_s,
                        recovery_s=args.recovery_s, params=params, exited_early=soak.exited,
                        stopped_cleanly=clean, leftover_pids=tuple(leftovers))


if __name__ == "__main__":
    sys.exit(main())
