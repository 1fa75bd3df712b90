"""A node's frozen snapshotter is noticed: the agent pings it every heartbeat, and a node that
expects one says `degraded` (and so does every function that snapshots) over the HTTP API, in
`thaw ls` and in /metrics, until it answers again. Real processes throughout; the fault is real
too: SIGSTOP freezes the snapshotter, so its event loop stops answering.

The frozen-snapshotter test needs root and CRIU 4.x (`sudo infra/install-criu.sh`) and FAILS
without them, as the other snapshot tests do.
"""

import asyncio
import os
import signal
import subprocess
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from bus_schemas import redis_keys as K
from bus_schemas.codec import decode
from bus_schemas.nodes import NodeCapacity
from thaw_core import servers
from thaw_core.store import events

from tests.conftest import eventually
from tests.platform.conftest import _healthy, deploy, echo_spec, invoke, thaw_ls
from tests.platform.harness import RESTORE_LINE, Harness

PING_TIMEOUT_S = 0.5  # with the harness's heartbeat_s = 0.5: down after 3 misses, ~1.5-3 s


@dataclass
class LivenessHarness(Harness):
    """The harness's node, with `--expect-snapshotter` as `thaw up` passes it, and short pings."""

    expect_snapshotter: bool = True

    def args(self, name: str) -> list[str]:
        args = super().args(name)
        return [*args, "--expect-snapshotter"] if name == "agent" and self.expect_snapshotter else args

    def _node_config(self) -> str:
        return super()._node_config().replace(
            RESTORE_LINE, f"restore_timeout_s = {RESTORE_TIMEOUT_S}\nsnapshotter_ping_timeout_s = {PING_TIMEOUT_S}\n")


@asynccontextmanager
async def running(tmp_path, redis_url, expect_snapshotter: bool, with_snapshotter: bool):
    h = LivenessHarness(tmp_path, servers.start_nats(tmp_path / "nats"), redis_url,
                        expect_snapshotter=expect_snapshotter)
    names = ("placement", "agent", "gateway", "snapshotter") if with_snapshotter else ("placement", "agent", "gateway")
    for name in names:
        h.start(name)
    try:
        await eventually(lambda: _healthy(h.url), 20, what="gateway /healthz")
        yield h
    except BaseException:
        print(h.logs())
        raise
    finally:
        if with_snapshotter and h.procs["snapshotter"].poll() is None:
            h.procs["snapshotter"].send_signal(signal.SIGCONT)  # a stopped process would not hear SIGTERM
        h.stop()


@pytest.fixture
def criu_works():
    hint = "run `sudo infra/install-criu.sh` (CRIU 4.x into /usr/local/sbin) and run the tests as root"
    if os.geteuid() != 0:
        pytest.fail(f"the snapshotter needs root: {hint}")
    out = subprocess.run(["/usr/local/sbin/criu", "check"], capture_output=True, text=True, timeout=60)
    if out.returncode:
        pytest.fail(f"`criu check` fails: {out.stdout[-300:]}{out.stderr[-300:]}: {hint}")


async def get(http, url: str) -> dict:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def status(http, h: Harness) -> dict[str, tuple[str, str]]:
    """(status, degraded_reason) of the node, of `echo` in the listing, and of GET /v1/functions/echo."""
    nodes = {n["name"]: n for n in (await get(http, h.url + "/v1/nodes"))["nodes"]}
    listed = {f["name"]: f for f in (await get(http, h.url + "/v1/functions"))["functions"]}
    one = (await get(http, h.url + "/v1/functions/echo"))["function"]
    rows = {"node": nodes.get(h.node), "listed": listed["echo"], "get": one}
    return {k: (row["status"], row["degraded_reason"]) if row else ("absent", "") for k, row in rows.items()}


async def metrics(http, h: Harness) -> set[str]:
    async with http.get(h.url + "/metrics") as resp:
        text = await resp.text()
    return {line for line in text.splitlines() if line.startswith(("thaw_node_degraded", "thaw_function_degraded"))}


async def reported(r, node: str) -> NodeCapacity | None:
    """The node's last capacity report as placement stored it."""
    raw = await r.hget(K.node(node), "capacity")
    return decode(raw, NodeCapacity) if raw else None


async def test_a_frozen_snapshotter_degrades_its_node_and_snapshotting_functions_until_it_thaws(
        criu_works, tmp_path, redis_url, r, http):
    async with running(tmp_path, redis_url, expect_snapshotter=True, with_snapshotter=True) as h:
        await deploy(http, h.url, echo_spec())

        async def answering():  # snapshot support comes from the snapshotter's answer, not from Redis
            cap = await reported(r, h.node)
            return cap is not None and cap.snapshot_support == ("criu",) and cap.degraded == ""
        await eventually(answering, 30, what="the agent to hear its snapshotter answer")
        ok = {"node": ("ok", ""), "listed": ("ok", ""), "get": ("ok", "")}
        assert await status(http, h) == ok
        assert await metrics(http, h) == {f'thaw_node_degraded{{node="{h.node}"}} 0.0',
                                          'thaw_function_degraded{fn="echo"} 0.0'}

        log_before = len((h.root / "agent.log").read_text())  # a slow start may have logged an outage
        h.procs["snapshotter"].send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        degraded = await eventually(lambda: _all_degraded(http, h), 15, every_s=0.1,
                                    what="the node and echo to say degraded")
        took_s = time.monotonic() - frozen_at
        ping = f"snapshot.ping.{h.node}"
        assert ping in degraded["node"][1] and "pods cold-start until it is back" in degraded["node"][1]
        assert degraded["listed"] == degraded["get"] and f"node {h.node} degraded: " in degraded["get"][1]
        assert (await reported(r, h.node)).snapshot_support == (), "no snapshots offered while it is frozen"
        listing = thaw_ls(http, h)
        assert listing.count(f"degraded: snapshotter not answering on {ping}") == 2, listing  # node and echo
        assert await metrics(http, h) == {f'thaw_node_degraded{{node="{h.node}"}} 1.0',
                                          'thaw_function_degraded{fn="echo"} 1.0'}

        h.procs["snapshotter"].send_signal(signal.SIGCONT)
        await eventually(lambda: _all_ok(http, h), 15, every_s=0.1, what="the node and echo to be ok again")
        assert "degraded" not in thaw_ls(http, h)
        assert (await reported(r, h.node)).snapshot_support == ("criu",)
        assert await metrics(http, h) == {f'thaw_node_degraded{{node="{h.node}"}} 0.0',
                                          'thaw_function_degraded{fn="echo"} 0.0'}
        agent_log = (h.root / "agent.log").read_text()[log_before:]
        assert agent_log.count("degraded: snapshotter not answering") == 1, "one WARNING per outage, not per beat"
        assert agent_log.count("healthy again") == 1
        print(f"\nfrozen snapshotter reported degraded after {took_s:.1f}s")


async def _all_degraded(http, h: Harness) -> dict | None:
    now = await status(http, h)
    return now if all(s == "degraded" for s, _ in now.values()) else None


async def _all_ok(http, h: Harness) -> bool:
    return all(s == "ok" for s, _ in (await status(http, h)).values())


async def test_a_node_not_expecting_a_snapshotter_is_never_degraded(tmp_path, redis_url, r, http):
    async with running(tmp_path, redis_url, expect_snapshotter=False, with_snapshotter=False) as h:
        await deploy(http, h.url, echo_spec())
        await eventually(lambda: reported(r, h.node), 20, what="the node's capacity report")
        seen = set()
        for _ in range(20):  # 3 s: a dozen unanswered pings, four times down_after
            seen.add(tuple((await status(http, h)).values()))
            await asyncio.sleep(0.15)
        assert seen == {(("ok", ""), ("ok", ""), ("ok", ""))}
        assert (await reported(r, h.node)).degraded == ""
        assert "degraded" not in thaw_ls(http, h)


async def test_while_the_snapshotter_is_frozen_wake_ups_cold_start_at_once_and_restore_again_after(
        criu_works, tmp_path, redis_url, r, http):
    """A restore waiting on a frozen snapshotter is given up when the pings say it is down (not
    at the restore timeout), and it holds up no other pod's start on the node meanwhile."""
    async with running(tmp_path, redis_url, expect_snapshotter=True, with_snapshotter=True) as h:
        await deploy(http, h.url, echo_spec(max_pods=1, idle_timeout_s=2))
        await deploy(http, h.url, {**echo_spec(max_pods=1, idle_timeout_s=600), "name": "other", "snapshot": False})
        await _wake_and_scale_to_zero(http, h, r)  # cold: it takes the snapshot
        await eventually(lambda: _snapshots_of(r, "echo"), 30, what="echo's snapshot")
        assert await _wake_and_scale_to_zero(http, h, r) == "restored"

        h.procs["snapshotter"].send_signal(signal.SIGSTOP)
        started = time.monotonic()
        (echo_status, _, echo_pod), (other_status, _, _) = await asyncio.gather(
            invoke(http, h.url, "echo", b"frozen"), _invoke_after(http, h, "other", 0.3))
        took_s = time.monotonic() - started
        assert (echo_status, other_status) == (200, 200)
        assert took_s < RESTORE_TIMEOUT_S - 2, f"waited {took_s:.1f}s, near the restore timeout"
        why = [e["detail"] for e in await events.read(r, echo_pod) if e["event"] == "restore_failed"]
        assert why and ("stopped answering mid-restore" in why[0] or "snapshotter is down" in why[0]), why

        h.procs["snapshotter"].send_signal(signal.SIGCONT)
        await eventually(lambda: _all_ok(http, h), 15, every_s=0.1, what="the node to be ok again")
        await eventually(lambda: _pods_of(r, "echo", none=True), 30, what="echo to scale to zero")
        assert await _wake_and_scale_to_zero(http, h, r) == "restored", "restores work again once it thaws"


RESTORE_TIMEOUT_S = 10  # short, so that giving up on pings is told apart from timing out


async def _invoke_after(http, h: Harness, fn: str, delay_s: float):
    await asyncio.sleep(delay_s)  # its placement queues behind echo's restore on the node
    started = time.monotonic()
    out = await invoke(http, h.url, fn, b"x")
    assert time.monotonic() - started < 5, "a cold start waited on another pod's restore"
    return out


async def _wake_and_scale_to_zero(http, h: Harness, r) -> str:
    """One call to echo from zero; how its pod started ("restored" or "cold"), once it is gone again."""
    status, body, pod = await invoke(http, h.url, "echo", b"wake")
    assert status == 200, body
    how = "restored" if any(e["event"] == "restored" for e in await events.read(r, pod)) else "cold"
    await eventually(lambda: _pods_of(r, "echo", none=True), 30, what="echo to scale to zero")
    return how


async def _snapshots_of(r, fn: str) -> list:
    from thaw_core.store.snapshots import SnapshotCatalog

    return [s for s in await SnapshotCatalog(r).all() if s.fn == fn]


async def _pods_of(r, fn: str, none: bool = False):
    from thaw_core.store.pods import Pods

    live = [p for p in await Pods(r).live() if p.fn == fn]
    return not live if none else live
