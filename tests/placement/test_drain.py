"""Handing a draining node's pods over (placement/drain.py): a serving pod is replaced on another
node before it leaves, a pod serving nobody leaves at once, and capacity never drops while
replacements come up or cannot be placed."""

import pytest

from bus_schemas.pods import PodState
from placement.drain import (
    RETIRE_GRACE_MS, RETIRED, Handover, drain_waiting, handover, retired_pods_to_stop,
)
from thaw_core.store.pods import PodRecord

DRAIN_BEGAN_MS = 10_000
DRAINING = {"a": DRAIN_BEGAN_MS}
BEFORE, AFTER = DRAIN_BEGAN_MS - 5_000, DRAIN_BEGAN_MS + 1_000


def pod(name: str, node: str, state: PodState = PodState.IDLE, fn: str = "echo", created_ms: int = BEFORE,
        last_used_ms: int = 0, state_at_ms: int = 0, reason: str = "") -> PodRecord:
    return PodRecord(pod=name, fn=fn, node=node, state=state, created_ms=created_ms, last_used_ms=last_used_ms,
                     state_at_ms=state_at_ms, reason=reason)


def test_no_draining_node_means_nothing_to_do():
    assert handover([pod("p1", "a"), pod("p2", "b")], {}).idle


def test_a_serving_pod_gets_a_replacement_elsewhere_and_is_not_retired_yet():
    plan = handover([pod("p1", "a")], DRAINING)
    assert plan == Handover(start={"echo": 1}, pod_limit={"echo": 2})


def test_pods_of_the_function_elsewhere_from_before_the_drain_are_not_replacements():
    """The function keeps the capacity it had: its other pods were serving callers already."""
    plan = handover([pod("p1", "a"), pod("old", "b", created_ms=BEFORE)], DRAINING)
    assert plan.start == {"echo": 1} and plan.retire == ()


@pytest.mark.parametrize("state", [PodState.PENDING, PodState.STARTING, PodState.RESTORING])
def test_while_the_replacement_is_not_serving_yet_the_drained_pod_keeps_serving(state):
    plan = handover([pod("p1", "a"), pod("r1", "b", state, created_ms=AFTER)], DRAINING)
    assert plan.idle


@pytest.mark.parametrize("state", [PodState.IDLE, PodState.BUSY])
def test_once_the_replacement_serves_the_drained_pod_is_retired(state):
    plan = handover([pod("p1", "a", PodState.BUSY), pod("r1", "b", state, created_ms=AFTER)], DRAINING)
    assert plan == Handover(retire=("p1",))


@pytest.mark.parametrize("state", [PodState.PENDING, PodState.STARTING, PodState.RESTORING])
def test_a_pod_on_a_draining_node_that_serves_nobody_is_stopped_at_once(state):
    plan = handover([pod("p1", "a", state)], DRAINING)
    assert plan == Handover(stop=("p1",))


def test_two_drained_pods_are_retired_one_per_replacement_serving():
    pods = [pod("p1", "a", last_used_ms=1), pod("p2", "a", last_used_ms=2),
            pod("r1", "b", created_ms=AFTER), pod("r2", "c", PodState.STARTING, created_ms=AFTER)]
    plan = handover(pods, DRAINING)
    assert plan == Handover(retire=("p1",))  # the least recently used goes first
    # next round: p1 is out; p2 waits for r2
    assert handover([pods[1], *pods[2:]], DRAINING).idle
    ready = pod("r2", "c", created_ms=AFTER)
    assert handover([pods[1], pods[2], ready], DRAINING) == Handover(retire=("p2",))


def test_only_the_missing_replacements_are_started():
    pods = [pod("p1", "a"), pod("p2", "a"), pod("r1", "b", PodState.STARTING, created_ms=AFTER)]
    assert handover(pods, DRAINING) == Handover(start={"echo": 1}, pod_limit={"echo": 4})


def test_a_replacement_that_cannot_be_placed_leaves_the_drained_pod_serving():
    """Round after round the plan asks for the replacement again and retires nothing."""
    for _ in range(3):
        assert handover([pod("p1", "a")], DRAINING) == Handover(start={"echo": 1}, pod_limit={"echo": 2})


def test_one_replacement_placed_of_two_retires_one_drained_pod_and_keeps_the_capacity():
    pods = [pod("p1", "a", last_used_ms=1), pod("p2", "a", last_used_ms=2), pod("r1", "b", created_ms=AFTER)]
    plan = handover(pods, DRAINING)
    assert plan.start == {"echo": 1} and plan.retire == ("p1",)  # p2 and r1 serve: two, as before


def test_the_ledger_limit_lets_exactly_the_missing_replacements_in():
    """Every pod the ledger counts (a retired one until it stops, one elsewhere) plus the missing
    replacements: a second placement worker deciding the same round is refused."""
    pods = [pod("p1", "a", PodState.DRAINING), pod("p2", "a"), pod("old", "b")]
    assert handover(pods, DRAINING).pod_limit == {"echo": 4}


def test_functions_are_handed_over_each_on_its_own():
    pods = [pod("e1", "a"), pod("m1", "a", fn="model"), pod("m2", "b", fn="model", created_ms=AFTER)]
    plan = handover(pods, DRAINING)
    assert plan.start == {"echo": 1} and plan.retire == ("m1",)


def test_of_two_draining_nodes_neither_takes_the_replacement():
    draining = {"a": DRAIN_BEGAN_MS, "b": DRAIN_BEGAN_MS}
    plan = handover([pod("p1", "a"), pod("p2", "b", created_ms=AFTER)], draining)
    assert plan.start == {"echo": 2} and plan.retire == ()


@pytest.mark.parametrize("in_use,retired_ms_ago,stops", [
    (0, 0, True),  # every caller gave its slot back
    (1, 1_000, False),  # a call still runs there
    (1, RETIRE_GRACE_MS, True),  # a gateway kept its slot past the grace: stopped anyway
])
def test_a_retired_pod_stops_once_no_call_holds_it(in_use, retired_ms_ago, stops):
    now = 100_000
    retired = pod("p1", "a", PodState.DRAINING, state_at_ms=now - retired_ms_ago, reason=RETIRED)
    assert retired_pods_to_stop([retired], {"p1": in_use}, now) == (["p1"] if stops else [])


def test_a_pod_draining_for_another_reason_is_none_of_the_drains_business():
    """Scale-down and deletes stop their own pods; an agent moves a pod it stops to draining too."""
    assert retired_pods_to_stop([pod("p1", "a", PodState.DRAINING, reason="idle timeout")], {}, 0) == []



def test_a_drain_that_waits_says_for_which_function_and_why():
    pods = [pod("p1", "a"), pod("m1", "a", fn="model", state=PodState.STARTING)]
    waiting = drain_waiting(pods, {"a": 1, "c": 1}, {"echo": "gpu vram: 0 of 1 GPUs fit", "model": "no room"})
    assert waiting == {"a": "no other node takes a pod of echo (gpu vram: 0 of 1 GPUs fit)", "c": ""}
