"""Degraded nodes and functions as the gateway reports them: which nodes count, what a function's
reason names, and metrics that show each tenant only its own functions (the Redis store is real)."""

from bus_schemas import redis_keys as K
from bus_schemas.functions import FunctionSpec
from bus_schemas.nodes import NodeCapacity
from gateway.http_api import function_degraded
from gateway.metrics import GatewayMetrics
from thaw_core.store.nodes import Nodes, degraded_nodes

REASON = "snapshotter not answering on snapshot.ping.a for 3.0s: pods cold-start until it is back"


async def test_a_node_reads_back_the_degraded_reason_of_its_last_report(r):
    nodes = Nodes(r)
    await nodes.upsert_capacity(NodeCapacity(node="a", cpu_milli=1000, memory_mib=1024, degraded=REASON))
    await nodes.upsert_capacity(NodeCapacity(node="b", cpu_milli=1000, memory_mib=1024))
    assert [(n.name, n.degraded) for n in await nodes.all()] == [("a", REASON), ("b", "")]


async def test_a_node_stored_before_the_field_existed_reads_as_healthy(r):
    await r.hset(K.node("old"), mapping={"cpu_milli": 1, "memory_mib": 1, "gpu_count": 0,
                                           "capacity": '{"node":"old","cpu_milli":1,"memory_mib":1,"v":1}'})
    await r.sadd(K.NODES, "old")
    assert [n.degraded for n in await Nodes(r).all()] == [""]


async def test_only_degraded_nodes_that_still_heartbeat_count(r):
    nodes = Nodes(r)
    for name, reason, heartbeat_ms in (("live", REASON, 9_000), ("silent", REASON, 1_000), ("fine", "", 9_000)):
        await nodes.upsert_capacity(NodeCapacity(node=name, cpu_milli=1, memory_mib=1, degraded=reason))
        await nodes.heartbeat(name, heartbeat_ms)
    assert degraded_nodes(await nodes.all(), now_ms=10_000, live_within_s=5) == {"live": REASON}


def test_a_function_that_snapshots_is_degraded_naming_each_degraded_node():
    spec = FunctionSpec(name="f", command=("x",))
    assert function_degraded(spec, {}) == ""
    reason = function_degraded(spec, {"b": "why b", "a": "why a"})
    assert reason == "node a degraded: why a; node b degraded: why b"


def test_a_function_that_does_not_snapshot_is_not_degraded_by_its_nodes():
    assert function_degraded(FunctionSpec(name="f", command=("x",), snapshot=False), {"a": REASON}) == ""


def test_a_crash_loop_degrades_any_function_and_comes_first():
    spec = FunctionSpec(name="f", command=("x",))
    loop = "crash loop: 5 pods in a row failed to start; last: the worker exited with exit code 3"
    assert function_degraded(FunctionSpec(name="f", command=("x",), snapshot=False), {}, loop) == loop
    assert function_degraded(spec, {"a": "why a"}, loop) == f"{loop}; node a degraded: why a"


def test_metrics_show_every_nodes_health_but_only_the_callers_functions():
    metrics = GatewayMetrics()
    metrics.observe_health({"a": True, "b": False}, {"mine": True, "theirs": True})
    body = metrics.render({"mine"})[0].decode()
    assert 'thaw_node_degraded{node="a"} 1.0' in body and 'thaw_node_degraded{node="b"} 0.0' in body
    assert 'thaw_function_degraded{fn="mine"} 1.0' in body
    assert "theirs" not in body


def test_a_scrape_replaces_the_last_one_so_gone_nodes_and_functions_disappear():
    metrics = GatewayMetrics()
    metrics.observe_health({"a": True}, {"f": True})
    metrics.observe_health({}, {})
    body = metrics.render({"f"})[0].decode()
    assert 'node="a"' not in body and 'fn="f"' not in body
