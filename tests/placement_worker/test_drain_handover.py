"""The placement worker hands a draining node's pod over (placement/drain.py, with real Redis and
NATS): it waits, and says why, while no other node takes the replacement; places it elsewhere
past max_pods once one can; retires the drained pod once the replacement serves; and stops it
only when no caller holds a slot on it any more."""

import msgspec
import pytest
from nats.js.errors import NotFoundError

from bus_schemas import subjects
from bus_schemas.functions import FunctionSpec, Resources, Scaling
from bus_schemas.nodes import NodeCapacity
from bus_schemas.pods import PodState, PodStop
from thaw_core.clock import now_ms
from thaw_core.store.client import connect_redis
from thaw_core.store.functions import Functions
from thaw_core.store.leases import Leases
from thaw_core.store.ledger import Ledger
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods

from placement.settings import PlacementSettings
from placement.worker import PlacementWorker

SPEC = FunctionSpec(name="dr-fn", command=("x",), resources=Resources(vram_mib=0, gpu_count=0, cpu_milli=1000,
                                                                       memory_mib=64),
                    scaling=Scaling(min_pods=1, max_pods=1, concurrency=1))


async def a_node(r, name: str) -> None:
    await Nodes(r).upsert_capacity(NodeCapacity(node=name, cpu_milli=4000, memory_mib=4096))
    await Nodes(r).heartbeat(name, now_ms())


async def serving(r, pod: str) -> None:
    pods = Pods(r)
    assert (await pods.move(pod, PodState.STARTING, now_ms())).applied
    assert (await pods.move(pod, PodState.IDLE, now_ms(), endpoint="http://127.0.0.1:1")).applied


async def stop_sent(js, node: str) -> str | None:
    """The pod of the last place.stop sent to `node`, None if none was."""
    try:
        msg = await js.get_last_msg("PLACEMENT", subjects.place_stop(node))
    except NotFoundError:
        return None
    return msgspec.json.decode(msg.data, type=PodStop).pod


async def node(r, name: str):
    return next(n for n in await Nodes(r).all() if n.name == name)


@pytest.fixture
async def r(redis_url):
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


async def test_a_drained_pod_is_replaced_elsewhere_before_it_stops(r, js, nats_server, redis_url):
    worker = PlacementWorker(PlacementSettings(nats_url=nats_server.url, redis_url=redis_url), js, r)
    await a_node(r, "dr-a")
    await Functions(r).put(SPEC)
    await worker.housekeeping()  # min_pods: its first pod, on the only node
    [drained] = await Pods(r).live(SPEC.name)
    assert drained.node == "dr-a"
    await serving(r, drained.pod)
    assert await Nodes(r).set_draining("dr-a", True, now_ms())

    await worker.housekeeping()  # no other node: the pod keeps serving, and the drain says why
    assert [(p.pod, p.state) for p in await Pods(r).live(SPEC.name)] == [(drained.pod, PodState.IDLE)]
    assert "no other node takes a pod of dr-fn" in (await node(r, "dr-a")).drain_waiting

    await a_node(r, "dr-b")
    await worker.housekeeping()  # a replacement on dr-b, past max_pods 1; the drained pod still serves
    pods = {p.pod: p for p in await Pods(r).live(SPEC.name)}
    [replacement] = [p for p in pods.values() if p.pod != drained.pod]
    assert (replacement.node, pods[drained.pod].state) == ("dr-b", PodState.IDLE)
    assert (await node(r, "dr-a")).drain_waiting == ""

    held = await Leases(r).acquire(SPEC.name, 1, "gw", 60_000, now_ms())  # a caller on the drained pod
    assert [s.pod for s in held.slots] == [drained.pod]
    await worker.housekeeping()  # the replacement is not serving yet: nothing moves
    assert (await Pods(r).get(drained.pod)).state == PodState.BUSY

    await serving(r, replacement.pod)
    await worker.housekeeping()  # retired, but a call still holds it: not stopped yet
    assert (await Pods(r).get(drained.pod)).state == PodState.DRAINING
    assert await stop_sent(js, "dr-a") is None

    await Leases(r).release(drained.pod, [held.slots[0].member], now_ms())
    await worker.housekeeping()
    assert await stop_sent(js, "dr-a") == drained.pod
    assert await stop_sent(js, "dr-b") is None


async def test_a_pod_on_a_draining_node_that_serves_nobody_yet_is_stopped_at_once(r, js, nats_server, redis_url):
    worker = PlacementWorker(PlacementSettings(nats_url=nats_server.url, redis_url=redis_url), js, r)
    await a_node(r, "st-a")
    spec = msgspec.structs.replace(SPEC, name="st-fn")
    await Functions(r).put(spec)
    await worker.housekeeping()
    [starting] = await Pods(r).live(spec.name)
    await Nodes(r).set_draining("st-a", True, now_ms())
    await a_node(r, "st-b")
    await worker.housekeeping()
    assert (await Pods(r).get(starting.pod)).state == PodState.DRAINING
    assert await stop_sent(js, "st-a") == starting.pod
    await Ledger(r).release(starting.pod, PodState.STOPPED, "stopped", now_ms())  # as its agent does
    await worker.housekeeping()  # min_pods again, elsewhere
    assert [p.node for p in await Pods(r).live(spec.name) if p.pod != starting.pod] == ["st-b"]
