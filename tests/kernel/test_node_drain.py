"""Draining a node in the store (`thaw drain`): the mark on the node's record, the ledger refusing
it new pods, and a drained pod retired from service while callers still hold its slots."""

from bus_schemas.nodes import GpuCapacity, NodeCapacity
from bus_schemas.pods import PodState
from thaw_core.store.leases import Leases
from thaw_core.store.ledger import Ledger, Reservation
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods

NODE = NodeCapacity(node="d1", cpu_milli=4000, memory_mib=8192, gpus=(GpuCapacity(index=0, model="A", vram_mib=1000),))


def res(pod: str, node: str = "d1") -> Reservation:
    return Reservation(pod=pod, fn="fd", node=node, gpus=(0,), vram_mib=100, gpu_milli=100, cpu_milli=100,
                       memory_mib=100, max_pods=10, concurrency=2)


async def node(r, name: str = "d1"):
    return next(n for n in await Nodes(r).all() if n.name == name)


async def test_a_node_is_marked_draining_from_the_first_drain_and_undrained_again(r):
    nodes = Nodes(r)
    await nodes.upsert_capacity(NODE)
    assert not (await node(r)).draining
    assert await nodes.set_draining("d1", True, 1_000) is True
    assert await nodes.set_draining("d1", True, 2_000) is True  # a repeat keeps when it began
    assert ((await node(r)).draining, (await node(r)).draining_since_ms) == (True, 1_000)
    await nodes.upsert_capacity(NODE)  # a new capacity report leaves the mark alone
    assert (await node(r)).draining
    assert await nodes.set_draining("d1", False, 3_000) is True
    assert await nodes.set_draining("d1", False, 3_000) is True
    assert not (await node(r)).draining


async def test_an_unknown_node_cannot_be_drained(r):
    assert await Nodes(r).set_draining("nowhere", True, 1_000) is False
    assert [n for n in await Nodes(r).all() if n.name == "nowhere"] == []


async def test_the_ledger_gives_a_draining_node_no_new_pod_and_takes_it_back_undrained(r):
    nodes, ledger = Nodes(r), Ledger(r)
    await nodes.upsert_capacity(NODE)
    await nodes.set_draining("d1", True, 1_000)
    assert await ledger.reserve(res("pd1"), 1_000) == "node_draining"
    assert (await node(r)).cpu_reserved == 0
    await nodes.set_draining("d1", False, 2_000)
    assert await ledger.reserve(res("pd1"), 2_000) == "ok"
    await ledger.release("pd1", PodState.STOPPED, "test", 3_000)


async def test_a_retired_pod_leaves_service_with_its_slots_still_held_and_gets_no_new_one(r):
    await Nodes(r).upsert_capacity(NODE)
    pods, leases = Pods(r), Leases(r)
    assert await Ledger(r).reserve(res("pd2"), 1_000) == "ok"
    await pods.move("pd2", PodState.STARTING, 1_000)
    await pods.move("pd2", PodState.IDLE, 1_000, endpoint="http://127.0.0.1:1")
    held = await leases.acquire("fd", 1, "gw", 60_000, 2_000)
    assert len(held.slots) == 1
    assert not (await leases.begin_drain("pd2", 10_000, 3_000, "idle")).applied  # scale-down waits for it
    retired = await leases.retire("pd2", 3_000, "node draining: replaced")
    assert (retired.applied, retired.found) == (True, "busy")
    assert (await pods.get("pd2")).state == PodState.DRAINING
    assert (await leases.acquire("fd", 1, "gw", 60_000, 4_000)).slots == []
    assert await leases.in_use("pd2", 4_000) == 1
    await leases.release("pd2", [held.slots[0].member], 5_000)
    assert await leases.in_use("pd2", 5_000) == 0
    assert not (await leases.retire("pd2", 6_000, "again")).applied  # once only
    await Ledger(r).release("pd2", PodState.STOPPED, "test", 7_000)
