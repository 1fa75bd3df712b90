"""A 3-node fleet under a bounded load of echo calls, while one part of it dies (issue 11).

    python -m bench.fleet_failures [--state-dir DIR] [--port 18480]

One `thaw up --cluster 3` fleet (bench/fleet_process.py), then each event in turn, with
CALLERS callers invoking `echo` in a loop (a call is *hung* when it has no answer after HUNG_S):
- node: kill -9 the node serving echo (agent, snapshotter, workers). Its pods must be replaced
  on the other nodes, its reservations released once, its workers gone;
- nats: kill -9 the NATS server leading the async-call stream, while async calls are being
  accepted: every accepted (acked) call must still run (the supervisor restarts the server);
- redis: kill -9 the Valkey primary: Sentinel promotes the replica, the services follow it, and
  the killed node, restarted by the supervisor, rejoins as the new primary's replica.

After each: the ledger must be exact (every node's reserved counters equal the sum of the
reservations of its live pods, and a pod that is not live holds none). Printed: a Markdown
table (event, calls OK / errors / hung, time to recover, leaked resources) and what recovered
when. *Time to recover*: from the kill to the end of the last failed call (0 when none failed);
for a node, also until its pods were replaced. tests/fleet/test_fleet_failures.py runs the same
events and asserts what the table reports.
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bus_schemas import permissions
from bus_schemas import redis_keys as K
from bus_schemas.pods import LIVE_STATES, SERVING
from thaw import AsyncClient, ThawError
from thaw.cluster import node_worker_pids
from thaw.launcher import bus_credentials, operator_creds
from thaw_core import bus
from thaw_core.store.client import connect_redis
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods

CALLERS = 4
HUNG_S = 60.0
BEFORE_S = 4.0  # load before the kill
AFTER_S = 12.0  # load after recovery
RECOVERY_BOUND_S = 60.0  # stop waiting for recovery after this long: the table says "not recovered"
ASYNC_CALLS = 20
SPEC = {"name": "echo", "command": ["{python}", str(Path(__file__).resolve().parent.parent / "examples" / "echo"
                                                  / "worker.py")],
        "health_path": "/healthz", "invoke_path": "/",
        "resources": {"vram_mib": 1024, "gpu_count": 1, "cpu_milli": 300, "memory_mib": 256},
        "scaling": {"min_pods": 1, "max_pods": 2, "concurrency": 4, "idle_timeout_s": 120, "start_timeout_s": 30}}


@dataclass
class Call:
    started: float
    ended: float
    outcome: str  # ok, error, hung


@dataclass
class Outcome:
    event: str
    calls: list[Call]
    killed_at: float
    recovered_s: float | None  # until the platform was whole again (pods replaced, server back, store answering)
    detail: str
    leaked: list[str] = field(default_factory=list)
    restored_elsewhere: list[bool] = field(default_factory=list)  # node event: each replacement pod

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.calls)

    @property
    def calls_recover_s(self) -> float:
        failed = [c.ended for c in self.calls if c.outcome != "ok" and c.ended >= self.killed_at]
        return max(failed) - self.killed_at if failed else 0.0

    def failures(self) -> str:
        """Each call that failed or hung: when it started and ended, seconds from the kill."""
        return ", ".join(f"{c.outcome} {c.started - self.killed_at:+.1f}..{c.ended - self.killed_at:+.1f} s"
                         for c in self.calls if c.outcome != "ok")

    def row(self) -> str:
        whole = "not recovered" if self.recovered_s is None else f"{self.recovered_s:.1f} s"
        return (f"| {self.event} | {self.count('ok')} / {self.count('error')} / {self.count('hung')} | "
                f"{self.calls_recover_s:.1f} s (whole again: {whole}) | {len(self.leaked)} |")


class FleetProcess:
    """bench/fleet_process.py, driven over its stdin/stdout."""

    def __init__(self, state_dir: Path, port: int):
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.fleet_process", str(state_dir), str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
        self.info = self._reply()
        if "error" in self.info:
            raise RuntimeError(f"the fleet did not start: {self.info['error']}")
        self.state_dir = Path(self.info["state_dir"])

    def _reply(self) -> dict:
        """The next JSON line; the `[thaw] ...` progress lines go on to our stdout."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
            print(line, end="", flush=True)
        raise RuntimeError(f"the fleet process exited ({self.proc.wait()})")

    def command(self, line: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def pids(self) -> dict[str, int]:
        return self.command("pids")["pids"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("stop")
            except (OSError, RuntimeError):
                pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Load:
    """CALLERS callers invoking echo back to back until stopped."""

    def __init__(self, client: AsyncClient):
        self.client, self.calls, self._stop = client, [], asyncio.Event()

    async def caller(self, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.time()
            try:
                await asyncio.wait_for(self.client.invoke("echo", json={"caller": i, "n": n}), HUNG_S)
                outcome = "ok"
            except ThawError:
                outcome = "error"
            except TimeoutError:
                outcome = "hung"
            self.calls.append(Call(started, time.time(), outcome))
            n += 1
            if outcome != "ok":
                await asyncio.sleep(0.2)  # a caller backs off after an error, as a client would

    async def __aenter__(self) -> "Load":
        self._tasks = [asyncio.create_task(self.caller(i)) for i in range(CALLERS)]
        return self

    async def __aexit__(self, *exc) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def node_lost(fleet: FleetProcess, client: AsyncClient, r) -> Outcome:
    async with Load(client) as load:
        await asyncio.sleep(BEFORE_S)
        pods = [p for p in (await client.pods()).pods if p.fn == "echo" and p.state in SERVING]
        node = max({p.node for p in pods}, key=lambda n: sum(p.node == n for p in pods))
        snapshots = [s for s in await client.snapshots() if s.fn == "echo"]
        killed = fleet.command(f"kill-node {node}")
        killed_at = killed["at"]
        replaced_at = await wait_for(lambda: pods_replaced(client, node))
        await asyncio.sleep(AFTER_S)
    leaked = [f"worker pid {p} of {node}" for p in node_worker_pids(node)]
    leaked += await node_reservations_left(client, node)
    leaked += await ledger_problems(r)
    now = [p for p in (await client.pods()).pods if p.fn == "echo" and p.state in LIVE_STATES]
    detail = (f"killed {node} ({len(killed['killed'])} processes; {len(pods)} echo pods, "
              f"{sum(p.node == node for p in pods)} there); echo had {len(snapshots)} snapshot(s); now "
              + ", ".join(f"{p.pod} on {p.node} ({p.state}, {'restored' if p.snapshot else 'cold'})" for p in now))
    return Outcome("kill -9 a node (agent, snapshotter, workers)", load.calls, killed_at,
                   None if replaced_at is None else replaced_at - killed_at, detail, leaked,
                   [bool(p.snapshot) for p in now if p.pod not in {q.pod for q in pods}])


async def pods_replaced(client: AsyncClient, lost: str) -> bool:
    pods = [p for p in (await client.pods()).pods if p.fn == "echo"]
    return not any(p.node == lost for p in pods) and any(p.state in SERVING for p in pods)


async def nats_server_lost(fleet: FleetProcess, client: AsyncClient, r) -> Outcome:
    leader = await stream_leader(fleet, "INFER_ASYNC")
    accepted: list[str] = []
    async with Load(client) as load:
        await asyncio.sleep(BEFORE_S)
        submitting = asyncio.create_task(submit_async(client, accepted))
        await asyncio.sleep(0.5)
        pid = fleet.pids()[f"nats-{leader}"]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        back_at = await wait_for(lambda: server_back(fleet, leader, pid))
        await submitting
        done = await asyncio.gather(*(wait_call(client, c) for c in accepted))
        await asyncio.sleep(AFTER_S)
    lost = [c for c, status in zip(accepted, done) if status != "succeeded"]
    leaked = [f"accepted async call {c} not run" for c in lost] + await ledger_problems(r)
    detail = (f"killed nats-{leader} (leader of the async-call stream); {len(accepted)} async calls accepted "
              f"around it, {len(accepted) - len(lost)} ran")
    return Outcome("kill -9 the NATS server leading a stream", load.calls, killed_at,
                   None if back_at is None else back_at - killed_at, detail, leaked)


async def submit_async(client: AsyncClient, accepted: list[str]) -> None:
    for i in range(ASYNC_CALLS):
        try:
            accepted.append(await client.invoke_async("echo", json={"async": i}))
        except ThawError:
            pass  # refused, not accepted: the caller knows to retry; only acked calls count
        await asyncio.sleep(0.1)


async def wait_call(client: AsyncClient, call_id: str) -> str:
    try:
        return (await client.wait_call(call_id, timeout_s=RECOVERY_BOUND_S)).status
    except (ThawError, TimeoutError) as exc:
        return f"unknown ({exc})"


async def server_back(fleet: FleetProcess, i: int, old_pid: int) -> bool:
    return fleet.pids()[f"nats-{i}"] != old_pid


async def redis_primary_lost(fleet: FleetProcess, client: AsyncClient, r) -> Outcome:
    sentinels = sentinel_ports(fleet.info["redis"])
    old = primary_port(sentinels)
    name = next(n for n in ("valkey-primary", "valkey-replica")
                if port_of(fleet.state_dir / "valkey" / n.removeprefix("valkey-") / "valkey.conf") == old)
    async with Load(client) as load:
        await asyncio.sleep(BEFORE_S)
        os.kill(fleet.pids()[name], signal.SIGKILL)
        killed_at = time.time()
        answers_at = await wait_for(lambda: store_answers(r))
        await asyncio.sleep(AFTER_S)
    now = primary_port(sentinels)
    how = f"Sentinel made port {now} primary" if now != old else \
        "it came back (restarted, with its append-only file) before the Sentinels failed it over"
    detail = f"killed {name} (port {old}); {how}"
    return Outcome("kill -9 the Valkey primary", load.calls, killed_at,
                   None if answers_at is None else answers_at - killed_at, detail, await ledger_problems(r))


def sentinel_ports(url: str) -> list[int]:
    hosts = url.removeprefix("redis+sentinel://").split("/")[0]
    return [int(h.rsplit(":", 1)[1]) for h in hosts.split(",")]


def primary_port(sentinels: list[int]) -> int | None:
    for port in sentinels:
        try:
            with redis.Redis(port=port, socket_timeout=1) as s:
                found = s.sentinel_get_master_addr_by_name("thaw")
                if found:
                    return int(found[1])
        except redis.RedisError:
            continue
    return None


async def store_answers(r) -> bool:
    """Whether the store's primary, whichever node Sentinel names, answers (r follows it)."""
    return bool(await r.ping())


def port_of(conf: Path) -> int:
    return int(next(line.split()[1] for line in conf.read_text().splitlines() if line.startswith("port ")))


async def stream_leader(fleet: FleetProcess, stream: str) -> int:
    """The index of the NATS server leading `stream` (servers are named thaw-<i>)."""
    operator = bus_credentials(fleet.state_dir, permissions.OPERATOR)
    assert operator is not None
    nc = await bus.connect(fleet.info["nats"], "fleet-failures", operator)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.cluster.leader.rsplit("-", 1)[1])
    finally:
        await nc.close()


async def wait_for(check, bound_s: float = RECOVERY_BOUND_S) -> float | None:
    """When `check()` first held (time.time()), polling; None if not within `bound_s`."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        try:
            if await check():
                return time.time()
        except (ThawError, OSError, redis.RedisError):
            pass
        await asyncio.sleep(0.25)
    return None


async def node_reservations_left(client: AsyncClient, node: str) -> list[str]:
    [n] = [n for n in await client.nodes() if n.name == node] or [None]
    if n is None:
        return []
    held = n.cpu_reserved + n.memory_reserved + sum(g.vram_reserved_mib + g.milli_reserved for g in n.gpus)
    return [f"{node} still has resources reserved (cpu {n.cpu_reserved}m, memory {n.memory_reserved} MiB, "
            f"vRAM {[g.vram_reserved_mib for g in n.gpus]})"] if held else []


async def ledger_problems(r) -> list[str]:
    """Where a node's reserved counters differ from the sum of its live pods' reservations."""
    live = await Pods(r).live()
    held = {p.pod: await r.hgetall(K.reservation(p.pod)) for p in live if p.state in LIVE_STATES}
    problems = [f"live pod {pod} has no reservation" for pod, h in held.items() if not h]
    for node in await Nodes(r).all():
        mine = [h for h in held.values() if h and h["node"] == node.name]
        if node.cpu_reserved != sum(int(h["cpu_milli"]) for h in mine):
            problems.append(f"{node.name}: cpu reserved {node.cpu_reserved} != reservations' "
                            f"{sum(int(h['cpu_milli']) for h in mine)}")
        if node.memory_reserved != sum(int(h["memory_mib"]) for h in mine):
            problems.append(f"{node.name}: memory reserved {node.memory_reserved} != reservations'")
        for g in node.gpus:
            on_gpu = [h for h in mine if str(g.index) in h["gpus"].split(",")]
            if g.vram_reserved_mib != sum(int(h["vram_mib"]) for h in on_gpu):
                problems.append(f"{node.name} GPU {g.index}: vRAM reserved {g.vram_reserved_mib} != reservations'")
    return problems


EVENTS = {"node": node_lost, "nats": nats_server_lost, "redis": redis_primary_lost}


async def run_events(fleet: FleetProcess, events: list[str]) -> list[Outcome]:
    r = connect_redis(fleet.info["redis"], operator_creds(fleet.state_dir))
    try:
        async with AsyncClient(fleet.info["gateway"], fleet.info["key"]) as client:
            await client.deploy(SPEC)
            await wait_for(lambda: serving(client), 90)
            # the lost node's pods should come back from the shared tier, not cold
            await wait_for(lambda: has_snapshot(client), 60)
            outcomes = []
            for event in events:
                print(f"[fleet] {event}: load on, kill, recovery ...", flush=True)
                outcome = await EVENTS[event](fleet, client, r)
                print(f"[fleet] {outcome.row()}\n[fleet]   {outcome.detail}", flush=True)
                outcomes.append(outcome)
            return outcomes
    finally:
        await r.aclose()


async def node_listed(fleet: FleetProcess, name: str):
    """Node `name` as the fleet's gateway lists it, None if it does not."""
    async with AsyncClient(fleet.info["gateway"], fleet.info["key"]) as client:
        return next((n for n in await client.nodes() if n.name == name), None)


async def has_snapshot(client: AsyncClient) -> bool:
    return any(s.fn == "echo" for s in await client.snapshots())


async def serving(client: AsyncClient) -> bool:
    return any(p.fn == "echo" and p.state in SERVING for p in (await client.pods()).pods)


def table(outcomes: list[Outcome]) -> str:
    lines = ["| event | calls OK / errors / hung | time to recover | leaked resources |", "|---|---|---|---|"]
    return "\n".join(lines + [o.row() for o in outcomes])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet_failures", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", type=Path, help="default: a fresh temporary directory")
    p.add_argument("--port", type=int, default=18480)
    p.add_argument("--events", default="node,nats,redis")
    a = p.parse_args(argv)
    state_dir = a.state_dir or Path(tempfile.mkdtemp(prefix="thaw-fleet-"))
    fleet = FleetProcess(state_dir, a.port)
    try:
        outcomes = asyncio.run(run_events(fleet, a.events.split(",")))
    finally:
        fleet.stop()
    print(table(outcomes))
    for o in outcomes:
        print(f"- {o.event}: {o.detail}" + (f"; LEAKED: {o.leaked}" if o.leaked else ""))
    return 0 if all(not o.leaked and not o.count("hung") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
