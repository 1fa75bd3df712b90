"""Components die at any point; the platform heals. Faults are real: kill -9 and server restarts."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import nats

from bus_schemas import redis_keys as K
from thaw_core import servers
from thaw_core.store.apikeys import ApiKeys
from thaw_core.store.client import connect_redis
from tests.conftest import eventually
from tests.platform.conftest import _healthy, deploy, echo_spec, gpu_usage, invoke
from tests.platform.harness import Harness


async def pods_of(http, url):
    async with http.get(url + "/v1/pods") as resp:
        return json.loads(await resp.read())["pods"]


async def test_gateway_killed_mid_call_leaks_no_lease(platform, http, r):
    spec = echo_spec(concurrency=1, max_pods=1)
    spec["env"] = {"ECHO_DELAY_S": "5"}
    await deploy(http, platform.url, spec)
    call = asyncio.create_task(invoke(http, platform.url, "echo", b"slow"))
    [pod] = await eventually(lambda: pods_of(http, platform.url), 20, what="a pod")
    await eventually(lambda: r.zcard(K.pod_leases(pod["pod"])), 20, what="the call to lease the worker")

    platform.kill("gateway")
    await asyncio.gather(call, return_exceptions=True)

    async def released():
        state = await r.hget(K.pod(pod["pod"]), "state")
        return state == "idle" and await r.zcount(K.pod_leases(pod["pod"]), "-inf", "+inf") == 0
    await eventually(released, 10, what="the dead gateway's lease to expire and the pod to be idle")

    platform.start("gateway")
    await eventually(lambda: _healthy(platform.url), 20, what="gateway restart")
    status, body, served_by = await invoke(http, platform.url, "echo", b"again")
    assert (status, body, served_by) == (200, b"again", pod["pod"])


async def test_agent_killed_and_restarted_adopts_its_running_workers(platform, http):
    await deploy(http, platform.url, echo_spec())
    status, _, pod = await invoke(http, platform.url, "echo", b"x")
    assert status == 200

    platform.kill("agent")
    platform.start("agent")
    await asyncio.sleep(2)  # the restarted agent reconciles and heartbeats again

    status, body, served_by = await invoke(http, platform.url, "echo", b"y")
    assert (status, body, served_by) == (200, b"y", pod), "the adopted worker keeps serving"
    await asyncio.sleep(6)  # past unreported_grace_s: placement would reclaim an unreported pod
    assert [p["pod"] for p in await pods_of(http, platform.url)] == [pod]
    assert sum(await gpu_usage(http, platform.url)) == 2048, "adoption must not count vRAM twice"


async def test_agent_restarted_after_its_worker_died_cleans_up_and_frees_vram(platform, http):
    await deploy(http, platform.url, echo_spec())
    await invoke(http, platform.url, "echo", b"x")
    [pod] = await pods_of(http, platform.url)
    # The host's pid of the worker: the worker's own getpid() is 1 inside its PID namespace.
    worker_pid = int(pod["runtime_ref"].split(":")[0])

    platform.kill("agent")
    os.kill(worker_pid, signal.SIGKILL)
    platform.start("agent")

    async def released():
        return await pods_of(http, platform.url) == [] and sum(await gpu_usage(http, platform.url)) == 0
    await eventually(released, 15, what="the lost worker's pod to be released")
    status, body, new_pod = await invoke(http, platform.url, "echo", b"z")
    assert (status, body) == (200, b"z") and new_pod != pod["pod"]


async def test_components_reconnect_after_nats_server_restarts(platform, http, api_key):
    await deploy(http, platform.url, echo_spec())
    assert (await invoke(http, platform.url, "echo", b"before"))[0] == 200

    platform.restart_nats()
    await asyncio.sleep(2)

    assert (await invoke(http, platform.url, "echo", b"warm after"))[:2] == (200, b"warm after")
    spec = echo_spec()
    spec["name"] = "echo-two"
    await deploy(http, platform.url, spec)
    status, body, _ = await invoke(http, platform.url, "echo-two", b"cold after")
    assert (status, body) == (200, b"cold after"), "lease -> placement -> agent works over the new server"
    nc = await nats.connect(platform.nats.url)
    try:
        msg = await nc.request("infer.request.echo", b"nats after", timeout=20,
                               headers={"Authorization": f"Bearer {api_key}"})
        assert msg.data == b"nats after"
    finally:
        await nc.close()


async def test_a_graceful_agent_stop_stops_its_workers_and_frees_vram(platform, http):
    await deploy(http, platform.url, echo_spec())
    assert (await invoke(http, platform.url, "echo", b"x"))[0] == 200

    platform.kill("agent", signal.SIGTERM)

    assert await pods_of(http, platform.url) == []
    assert sum(await gpu_usage(http, platform.url)) == 0
    assert platform.kill_stray_workers() == 0, "no worker may outlive a gracefully stopped agent"


async def test_a_worker_the_agent_never_recorded_is_found_and_adopted(platform, http):
    await deploy(http, platform.url, echo_spec())
    status, _, pod = await invoke(http, platform.url, "echo", b"x")
    platform.kill("agent")
    for record in (platform.root / "agent" / "workers").glob("*.json"):
        record.unlink()  # as if the agent died between starting the worker and recording it
    platform.start("agent")
    await asyncio.sleep(2)

    status, body, served_by = await invoke(http, platform.url, "echo", b"y")
    assert (status, body, served_by) == (200, b"y", pod)
    assert sum(await gpu_usage(http, platform.url)) == 2048


async def test_a_restarted_agent_leaves_processes_it_did_not_start_alone(platform, http):
    """Another platform's worker on this host may carry the same node name and pod variables;
    only this agent's token marks its own workers (once, a restarted agent killed them all)."""
    await deploy(http, platform.url, echo_spec())
    status, _, pod = await invoke(http, platform.url, "echo", b"x")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], stdin=subprocess.DEVNULL,
                                env={"PATH": os.environ["PATH"], "THAW_NODE": platform.node,
                                     "THAW_POD": "echo-elsewhere", "THAW_AGENT": "another-platform"})
    try:
        platform.kill("agent")
        platform.start("agent")
        await asyncio.sleep(3)  # the restarted agent has reconciled
        assert stranger.poll() is None, "a process this agent did not start is not its to stop"
        status, body, served_by = await invoke(http, platform.url, "echo", b"y")
        assert (status, body, served_by) == (200, b"y", pod), "its own worker is still adopted"
    finally:
        stranger.kill()
        stranger.wait()


async def test_every_component_stops_and_no_worker_outlives_it_when_nats_and_redis_are_gone(tmp_path):
    """A stop must end even when the servers a component would clean up against are gone:
    its grace (10 s; the agent's stop_grace_s + 5) then cancellation, never a hang."""
    nats_server = servers.start_nats(tmp_path / "nats")
    redis_server = servers.start_redis(tmp_path / "redis")
    h = Harness(tmp_path, nats_server, redis_server.url)
    r = connect_redis(redis_server.url)
    key = await ApiKeys(r).create("default")
    await r.aclose()
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"})
    try:
        for name in ("placement", "agent", "gateway"):
            h.start(name)
        await eventually(lambda: _healthy(h.url), 20, what="gateway /healthz")
        await deploy(http, h.url, echo_spec())
        assert (await invoke(http, h.url, "echo", b"x"))[0] == 200
        assert h.worker_pids(), "a running worker (and its PID-namespace wrapper)"

        nats_server.kill()
        redis_server.process.kill()
        for proc in h.procs.values():
            proc.terminate()
        started = time.monotonic()
        for name, proc in h.procs.items():
            exit_code = await asyncio.to_thread(proc.wait, 40)
            assert time.monotonic() - started < 25, f"{name} took too long to stop (exit code {exit_code})"
        assert h.worker_pids() == [], "the agent's worker outlived it"
    finally:
        await http.close()
        h.stop()
        redis_server.stop()
