"""`thaw drain NODE` on a real 3-node fleet (`thaw up --cluster 3`, bench/fleet_process.py): the
node takes no new pod, and its warm pods are handed over to other nodes while callers keep
invoking, each replaced before it stops, so no call fails or waits on a cold start.

One fleet and one drain (through the CLI, as an operator runs it) for the module; each test
checks one promise against what was watched meanwhile."""

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from bench import fleet_failures as ff
from bus_schemas.pods import SERVING
from thaw import AsyncClient, ThawError
from thaw import types as T
from thaw.cluster import node_worker_pids
from thaw.launcher import operator_creds
from thaw_core.ports import free_port
from thaw_core.store.client import connect_redis

WATCH_EVERY_S = 0.2
DRAIN_WITHIN_S = 60.0
SECOND = {**ff.SPEC, "name": "echo-after", "scaling": {**ff.SPEC["scaling"], "min_pods": 2, "max_pods": 2}}
SERVING_STATES = {s.value for s in SERVING}


@dataclass
class Watched:
    """What the test saw around the drain."""

    node: str = ""
    drain_began_ms: int = 0
    drained_pods: list[str] = field(default_factory=list)  # echo's serving pods on the node when it began
    views: list[tuple[float, list[T.Pod]]] = field(default_factory=list)  # every poll of echo's pods
    calls: list[ff.Call] = field(default_factory=list)
    cli: subprocess.CompletedProcess | None = None
    after: list[T.Pod] = field(default_factory=list)  # every live pod once a new function serves
    node_row: T.Node | None = None
    leaked: list[str] = field(default_factory=list)
    unknown: subprocess.CompletedProcess | None = None
    invoker_refused: ThawError | None = None
    undrained: T.Node | None = None


def cli(fleet: ff.FleetProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thaw.cli", "--url", fleet.info["gateway"], "--key",
                           fleet.info["key"], "--state-dir", str(fleet.state_dir), *args],
                          capture_output=True, text=True, timeout=DRAIN_WITHIN_S + 30)


async def watch(client: AsyncClient, into: Watched, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            pods = [p for p in (await client.pods()).pods if p.fn == "echo"]
            into.views.append((time.time(), pods))
        except ThawError:
            pass
        await asyncio.sleep(WATCH_EVERY_S)


async def drain_under_load(fleet: ff.FleetProcess) -> Watched:
    seen = Watched()
    async with AsyncClient(fleet.info["gateway"], fleet.info["key"]) as client:
        await client.deploy(ff.SPEC)
        assert await ff.wait_for(lambda: ff.serving(client), 90), "echo never served"
        async with ff.Load(client) as load:
            await asyncio.sleep(2.0)
            serving = [p for p in (await client.pods()).pods if p.fn == "echo" and p.state in SERVING_STATES]
            seen.node = max({p.node for p in serving}, key=lambda n: sum(p.node == n for p in serving))
            seen.drained_pods = [p.pod for p in serving if p.node == seen.node]
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch(client, seen, stop))
            seen.drain_began_ms = int(time.time() * 1000)
            seen.cli = await asyncio.to_thread(cli, fleet, "drain", seen.node, "--timeout", str(DRAIN_WITHIN_S))
            await asyncio.sleep(2.0)  # callers go on after the drain
            stop.set()
            await watcher
        seen.calls = load.calls
        await client.deploy(SECOND)
        await ff.wait_for(lambda: both_serving(client), 90)
        seen.after = (await client.pods()).pods
        seen.node_row = next(n for n in await client.nodes() if n.name == seen.node)
        seen.leaked = [f"worker pid {p} of {seen.node}" for p in node_worker_pids(seen.node)]
        seen.leaked += await ff.node_reservations_left(client, seen.node)
        r = connect_redis(fleet.info["redis"], operator_creds(fleet.state_dir))
        try:
            seen.leaked += await ff.ledger_problems(r)
        finally:
            await r.aclose()
        seen.unknown = await asyncio.to_thread(cli, fleet, "drain", "no-such-node")
        invoker = await client.create_key(role="invoker")
        async with AsyncClient(fleet.info["gateway"], invoker.key) as as_invoker:
            try:
                await as_invoker.drain(seen.node)
            except ThawError as exc:
                seen.invoker_refused = exc
        await client.undrain(seen.node)
        seen.undrained = next(n for n in await client.nodes() if n.name == seen.node)
    return seen


async def both_serving(client: AsyncClient) -> bool:
    pods = [p for p in (await client.pods()).pods if p.fn == SECOND["name"]]
    return sum(p.state in SERVING_STATES for p in pods) == 2


@pytest.fixture(scope="module")
def drained(tmp_path_factory) -> Watched:
    fleet = ff.FleetProcess(tmp_path_factory.mktemp("drain"), free_port())
    try:
        return asyncio.run(drain_under_load(fleet))
    finally:
        fleet.stop()


def test_thaw_drain_shows_progress_until_the_node_holds_no_pod(drained):
    assert drained.cli is not None and drained.cli.returncode == 0, drained.cli
    out = drained.cli.stdout
    assert f"draining {drained.node}: {len(drained.drained_pods)} pods left" in out, out
    assert f"{drained.node} drained" in out, out


def test_no_call_fails_or_hangs_while_the_node_drains(drained):
    during = [c for c in drained.calls if c.ended * 1000 >= drained.drain_began_ms]
    assert during, "no call overlapped the drain"
    assert [c for c in drained.calls if c.outcome != "ok"] == []


def test_each_drained_pod_leaves_service_only_once_a_replacement_serves_elsewhere(drained):
    for pod in drained.drained_pods:
        left = next(((t, pods) for t, pods in drained.views
                     if not any(p.pod == pod and p.state in SERVING_STATES for p in pods)), None)
        assert left is not None, f"{pod} never left service"
        _, pods = left
        replacements = [p for p in pods if p.node != drained.node and p.state in SERVING_STATES
                        and p.created_ms >= drained.drain_began_ms]
        assert replacements, f"{pod} left service with no replacement serving: {pods}"
    gaps = [t for t, pods in drained.views if not any(p.state in SERVING_STATES for p in pods)]
    assert gaps == [], "echo had no serving pod at some moment of the drain"


def test_the_drained_node_ends_with_no_pod_nothing_reserved_and_no_worker(drained):
    assert drained.node_row is not None
    assert (drained.node_row.pods, drained.node_row.status, drained.node_row.draining) == (0, "draining", True)
    assert drained.leaked == []


def test_no_new_pod_lands_on_a_draining_node(drained):
    new = [p for _, pods in drained.views for p in pods if p.created_ms >= drained.drain_began_ms]
    new += [p for p in drained.after if p.created_ms >= drained.drain_began_ms]
    assert new and all(p.node != drained.node for p in new), [(p.pod, p.node) for p in new]
    assert sum(p.fn == SECOND["name"] for p in drained.after) == 2


def test_draining_an_unknown_node_says_so(drained):
    assert drained.unknown is not None and drained.unknown.returncode != 0
    assert "no node named 'no-such-node'" in drained.unknown.stderr, drained.unknown.stderr


def test_only_an_admin_key_drains_a_node(drained):
    assert drained.invoker_refused is not None and drained.invoker_refused.status == 403


def test_an_undrained_node_is_ok_again(drained):
    assert drained.undrained is not None
    assert (drained.undrained.status, drained.undrained.draining) == ("ok", False)
