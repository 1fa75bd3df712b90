"""As a hostile tenant would try it, on the real platform: what the open bus and store let an
outsider do, and what now stops it. (NATS and Redis authentication are the next layer; here each
component checks what it is told against the store.)"""

import asyncio

import nats

from bus_schemas import redis_keys as K
from bus_schemas import subjects
from bus_schemas.functions import FunctionSpec
from bus_schemas.pods import GpuSlice, PodAssigned, PodStop
from thaw_core import bus

from tests.platform.conftest import deploy, echo_spec, invoke


async def forge_assignment(h, pod: str, spec: FunctionSpec) -> None:
    nc = await nats.connect(h.nats.url)
    try:
        forged = PodAssigned(pod=pod, node=h.node, spec=spec, gpus=GpuSlice(indices=(0,), vram_mib=1, gpu_milli=1))
        await bus.publish(nc.jetstream(), subjects.place_assigned(h.node), forged, msg_id=f"forged:{pod}")
    finally:
        await nc.close()


async def test_a_forged_placement_never_runs_the_command_it_carries(platform, http, r, tmp_path):
    await deploy(http, platform.url, echo_spec())
    marker = tmp_path / "owned"
    evil = FunctionSpec(name="echo", command=("/bin/sh", "-c", f"id > {marker}; sleep 60"))
    # 1. a pod the store has never heard of
    await forge_assignment(platform, "echo-forged1", evil)
    # 2. a pending pod written straight into the store (as the attacker did with one HSET)
    await r.hset(K.pod("echo-forged2"), mapping={"fn": "echo", "node": platform.node, "state": "pending"})
    await forge_assignment(platform, "echo-forged2", evil)
    # 3. the same for a function that was never deployed
    await r.hset(K.pod("evil-forged3"), mapping={"fn": "evil", "node": platform.node, "state": "pending"})
    await forge_assignment(platform, "evil-forged3", FunctionSpec(name="evil", command=evil.command))
    await asyncio.sleep(3)
    assert not marker.exists(), "the message's command ran"
    log = (platform.root / "agent.log").read_text()
    assert "ignoring a placement of pod echo-forged1: the store has no such pod" in log
    assert "ignoring a placement of pod evil-forged3: function 'evil' is not deployed" in log


async def test_a_forged_stop_leaves_a_serving_pod_alone(platform, http):
    await deploy(http, platform.url, echo_spec())
    status, _, pod = await invoke(http, platform.url, "echo", b"x")
    assert status == 200
    nc = await nats.connect(platform.nats.url)
    try:
        forged = PodStop(pod=pod, node=platform.node, reason="forged")
        await bus.publish(nc.jetstream(), subjects.place_stop(platform.node), forged, msg_id=f"forged-stop:{pod}")
    finally:
        await nc.close()
    await asyncio.sleep(2)
    assert (await invoke(http, platform.url, "echo", b"still"))[1:] == (b"still", pod), "the same pod serves"
    log = (platform.root / "agent.log").read_text()
    assert f"ignoring a stop of pod {pod}: the store has it" in log and "not draining" in log  # idle or busy
