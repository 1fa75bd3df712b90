"""The worker sandbox through the whole platform (thaw_core/sandbox): a function's code runs as
its own user, sees none of the platform, reaches nothing but its own pod, and the kernel holds
it to the memory it reserved.

Needs root (as every node agent does to sandbox); the agent sandboxes wherever it can, so on
this machine every process worker of every platform test runs this way.
"""

import asyncio
import json
import os
from pathlib import Path
from urllib.parse import urlparse

import nats
import pytest

from bus_schemas import redis_keys as K
from thaw_core.sandbox.network import PodNetwork
from thaw_core.store import events
from thaw_core.store.functions import WORKER_UID_BASE

from tests.conftest import eventually
from tests.platform.conftest import deploy, invoke
from tests.platform.harness import Harness

PRY = str(Path(__file__).resolve().parent / "sandbox_worker.py")


@pytest.fixture(autouse=True)
def needs_root():
    if os.geteuid() != 0:
        pytest.fail("the sandbox needs the agent to run as root (as on a GPU node); run the tests as root")


def pry_spec(name: str, memory_mib: int = 128, vram_mib: int = 0) -> dict:
    gpu = {"gpu_count": 1, "vram_mib": vram_mib} if vram_mib else {"gpu_count": 0}
    return {"name": name, "command": ["{python}", PRY],
            "resources": {**gpu, "cpu_milli": 200, "memory_mib": memory_mib, "pids": 64},
            "scaling": {"max_pods": 1, "idle_timeout_s": 30, "start_timeout_s": 20}, "snapshot": False}


def host_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))


async def worker_pid(r, pod: str) -> int:
    return int((await r.hget(K.pod(pod), "runtime_ref")).split(":")[0])


async def _ask(http, h: Harness, fn: str, ask: dict) -> tuple[dict, str]:
    status, body, pod = await invoke(http, h.url, fn, json.dumps(ask).encode())
    assert status == 200, body
    return json.loads(body), pod


async def test_a_worker_runs_as_its_functions_own_user_and_reaches_nothing_of_the_platform(platform, http, r):
    await deploy(http, platform.url, pry_spec("pry-a"))
    await deploy(http, platform.url, pry_spec("pry-b"))
    _, pod_b = await _ask(http, platform, "pry-b", {})
    b_endpoint = await r.hget(K.pod(pod_b), "endpoint")
    nats_addr = urlparse(platform.nats.url).netloc
    redis_addr = urlparse(platform.redis_url).netloc
    bridge = PodNetwork.for_node(platform.node).gateway
    agent_dir = platform.root / "agent"
    seen, pod_a = await _ask(http, platform, "pry-a", {
        "read": [str(agent_dir), str(agent_dir / "logs" / f"{pod_b}.log"), str(platform.root), "/root", "/etc/shadow"],
        "connect": [nats_addr, redis_addr, f"{bridge}:{urlparse(platform.nats.url).port}",
                    f"{bridge}:{platform.http_port}", urlparse(b_endpoint).netloc],
    })

    assert all(outcome != "ok" for outcome in seen["read"].values()), seen["read"]
    assert all(outcome != "ok" for outcome in seen["connect"].values()), seen["connect"]
    assert seen["uid"] == 1000 and 1 in seen["procs"] and len(seen["procs"]) < 10, "its own user and PID namespace"
    uid_a, uid_b = [host_uid(await worker_pid(r, pod)) for pod in (pod_a, pod_b)]
    assert uid_a != uid_b, "two functions never share a user"
    assert [uid_a, uid_b] == [int(await r.hget(K.function(f), "uid")) for f in ("pry-a", "pry-b")]
    assert min(uid_a, uid_b) > WORKER_UID_BASE
    a_endpoint = await r.hget(K.pod(pod_a), "endpoint")
    assert urlparse(a_endpoint).hostname != urlparse(b_endpoint).hostname != "127.0.0.1"


async def test_a_workers_network_is_up_before_its_first_instruction(platform, http, r):
    spec = pry_spec("pry-net")
    spec["command"] = ["sh", "-c", 'echo "routes at start: $(grep -c ^eth0 /proc/net/route)"; exec "$0" "$1"',
                       "{python}", PRY]
    await deploy(http, platform.url, spec)
    _, pod = await _ask(http, platform, "pry-net", {})
    log = Path(await r.hget(K.pod(pod), "log")).read_text()
    assert "routes at start: 1" in log, log


async def test_a_redeployed_function_keeps_its_user(platform, http, r):
    await deploy(http, platform.url, pry_spec("pry-keep"))
    first = await r.hget(K.function("pry-keep"), "uid")
    await deploy(http, platform.url, {**pry_spec("pry-keep"), "env": {"CHANGED": "1"}})
    assert await r.hget(K.function("pry-keep"), "uid") == first


async def test_a_worker_over_its_memory_limit_is_killed_by_the_kernel_and_the_pod_says_why(platform, http, r):
    failed: list[dict] = []
    nc = await nats.connect(platform.nats.url)

    async def on_state(msg):
        state = json.loads(msg.data)
        if state["fn"] == "hungry" and state["state"] == "failed":
            failed.append(state)

    await nc.subscribe("pod.state.>", cb=on_state)
    try:
        await deploy(http, platform.url, pry_spec("hungry", memory_mib=64))
        fine, pod = await _ask(http, platform, "hungry", {"allocate_mib": 16})
        status, _, _ = await invoke(http, platform.url, "hungry", json.dumps({"allocate_mib": 200}).encode())
        assert status >= 500, "the call that went over the limit cannot have an answer"
        await eventually(lambda: failed, 20, what="the hungry pod to fail")
    finally:
        await nc.close()
    assert failed[0]["pod"] == pod
    assert "memory limit" in failed[0]["reason"] and "memory_mib" in failed[0]["reason"], failed[0]
    assert await r.hget(K.pod(pod), "state") in (None, "failed")


async def test_a_worker_over_its_vram_share_is_stopped_and_its_events_say_by_how_much(platform, http, r):
    """Mock GPUs here: the worker states its use to the stand-in inventory (agents/vram.py); on a
    GPU node NVML reports it, and the same path stops the pod."""
    failed: list[dict] = []
    nc = await nats.connect(platform.nats.url)

    async def on_state(msg):
        state = json.loads(msg.data)
        if state["fn"] == "greedy" and state["state"] == "failed":
            failed.append(state)

    await nc.subscribe("pod.state.>", cb=on_state)
    try:
        await deploy(http, platform.url, pry_spec("greedy", vram_mib=1024))
        _, pod = await _ask(http, platform, "greedy", {"vram_mib": 1000})
        await asyncio.sleep(3)  # three health ticks within its share
        assert not failed and await r.hget(K.pod(pod), "state") in ("idle", "busy")
        await _ask(http, platform, "greedy", {"vram_mib": 3000})
        await eventually(lambda: failed, 20, what="the greedy pod to be stopped")
    finally:
        await nc.close()
    assert failed[0]["pod"] == pod and "3000 MiB" in failed[0]["reason"] and "1024 MiB" in failed[0]["reason"]
    assert [e["event"] for e in await events.read(r, pod)] == ["vram_exceeded"]
