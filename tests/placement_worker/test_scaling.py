"""Scaling decisions are pure functions: table-driven specifications."""

import pytest

from bus_schemas.functions import FunctionSpec, Scaling
from bus_schemas.pods import PodState
from placement.scaling import lost_pods, pods_to_drain, pods_to_start
from thaw_core.store.pods import PodRecord


def spec(**scaling) -> FunctionSpec:
    return FunctionSpec(name="f", command=("x",), scaling=Scaling(**scaling))


def pod(name, state, last_used_ms=0, node="n1", state_at_ms=0) -> PodRecord:
    return PodRecord(pod=name, fn="f", node=node, state=PodState(state), state_at_ms=state_at_ms, created_ms=0,
                     last_used_ms=last_used_ms, concurrency=1, endpoint="", gpus=(), vram_mib=0, gpu_milli=0,
                     cpu_milli=0, memory_mib=0, runtime_ref="", snapshot="", reason="")


@pytest.mark.parametrize("scaling,pods,want,expected", [
    ({"max_pods": 2}, [], 1, 1),
    ({"max_pods": 2}, [], 5, 2),                                   # capped by max_pods
    ({"max_pods": 3}, [pod("a", "starting")], 1, 0),               # a starting pod already answers the need
    ({"max_pods": 3}, [pod("a", "starting")], 3, 2),
    ({"max_pods": 2}, [pod("a", "busy"), pod("b", "busy")], 4, 0),  # at max
    ({"min_pods": 2, "max_pods": 4}, [], 0, 2),                    # min_pods with no demand
    ({"min_pods": 1, "max_pods": 4}, [pod("a", "idle")], 0, 0),
    ({"max_pods": 2}, [pod("a", "draining")], 1, 1),               # draining pods do not count
])
def test_pods_to_start(scaling, pods, want, expected):
    assert pods_to_start(spec(**scaling), pods, want) == expected


def test_idle_pods_past_the_timeout_drain_oldest_first_keeping_min_pods():
    pods = [pod("a", "idle", last_used_ms=1000), pod("b", "idle", last_used_ms=500),
            pod("c", "busy", last_used_ms=9000), pod("d", "starting")]
    assert pods_to_drain(spec(idle_timeout_s=2), pods, now_ms=3100) == ["b", "a"]
    assert pods_to_drain(spec(idle_timeout_s=2), pods, now_ms=2800) == ["b"]
    assert pods_to_drain(spec(idle_timeout_s=2, min_pods=2), pods, now_ms=3100) == ["b"]
    assert pods_to_drain(spec(idle_timeout_s=2, min_pods=3), pods, now_ms=3100) == []


def test_pods_no_agent_reports_are_lost_within_bounded_time():
    pods = [pod("on-dead-node", "idle", node="dead"), pod("unlisted", "idle"), pod("listed", "idle"),
            pod("pending-new", "pending", state_at_ms=9000), pod("pending-old", "pending", state_at_ms=1000)]
    heartbeats = {"n1": 10_000, "dead": 1_000}
    seen = {"listed": 10_000, "unlisted": 3_000}
    lost = dict(lost_pods(pods, heartbeats, seen, now_ms=10_000, node_timeout_s=5, unreported_grace_s=3,
                          pending_timeout_s=5, watching_since_ms=0))
    assert set(lost) == {"on-dead-node", "unlisted", "pending-old"}
    assert "stopped reporting" in lost["on-dead-node"]


def test_a_freshly_started_placement_worker_gives_every_pod_a_grace_period():
    pods = [pod("a", "idle")]
    assert lost_pods(pods, {}, {}, now_ms=10_000, node_timeout_s=5, unreported_grace_s=3, pending_timeout_s=5,
                     watching_since_ms=9_000) == []


def test_late_heartbeats_are_not_heartbeats_without_the_pod():
    """A node heard from within node_timeout_s, whose last heartbeat heard listed the pod, keeps
    it however late its next one is: only a heartbeat that leaves it out for the grace counts."""
    pods = [pod("listed-then-quiet", "idle")]
    heartbeats = {"n1": 4_000}
    seen = {"listed-then-quiet": 4_000}
    assert lost_pods(pods, heartbeats, seen, now_ms=10_000, node_timeout_s=10, unreported_grace_s=3,
                     pending_timeout_s=5, watching_since_ms=0) == []
    heartbeats["n1"] = 7_500  # heard again, without it, past the grace
    assert [p for p, _ in lost_pods(pods, heartbeats, seen, now_ms=10_000, node_timeout_s=10, unreported_grace_s=3,
                                    pending_timeout_s=5, watching_since_ms=0)] == ["listed-then-quiet"]
