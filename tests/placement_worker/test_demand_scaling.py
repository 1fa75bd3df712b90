"""Scale-up on queue depth: how many pods a function's calls want, sync waiters, async backlog and
calls in flight alike. Pure functions: table-driven specifications."""

import pytest

from placement.scaling import Demand, desired_pods, pods_for_demand, pods_to_drain

from tests.placement_worker.test_scaling import pod, spec


@pytest.mark.parametrize("waiting,queued,in_flight,concurrency,max_pods,expected", [
    (0, 0, 0, 1, 4, 0),           # no calls, no pods: scale to zero is allowed
    (1, 0, 0, 1, 4, 1),
    (0, 5000, 0, 1, 20, 20),      # a backlog far past one gateway's in-flight limit: max_pods
    (0, 5000, 0, 1, 4, 4),
    (0, 3, 0, 4, 10, 1),          # partial pod: rounds up
    (0, 9, 0, 4, 10, 3),
    (2, 3, 3, 4, 10, 2),          # all three kinds add up: 8 calls at 4 a pod
    (2, 3, 4, 4, 10, 3),
    (0, 0, 7, 2, 10, 4),          # calls in flight alone keep their pods wanted
    (0, 40, 0, 1, 0, 0),          # max_pods 0: never
])
def test_desired_pods(waiting, queued, in_flight, concurrency, max_pods, expected):
    demand = Demand(waiting=waiting, queued=queued, in_flight=in_flight)
    assert desired_pods(demand, concurrency, max_pods) == expected


@pytest.mark.parametrize("pods,queued,expected", [
    ([], 40, 4),
    ([pod("a", "busy")], 40, 3),
    ([pod("a", "busy"), pod("b", "starting"), pod("c", "pending")], 40, 1),  # starting pods count
    ([pod("a", "busy"), pod("b", "draining")], 40, 3),                      # draining ones do not
    ([pod("a", "idle"), pod("b", "idle")], 1, 0),                          # never negative
    ([pod(n, "busy") for n in "abcd"], 40, 0),                             # at max_pods
])
def test_pods_for_demand_tops_live_pods_up_to_desired(pods, queued, expected):
    assert pods_for_demand(spec(max_pods=4, concurrency=1), pods, Demand(queued=queued)) == expected


def test_a_backlog_does_not_keep_idle_pods_from_draining_nor_drain_busy_ones():
    """Scale-down stays pods_to_drain's: only pods idle past their timeout go, whatever is queued;
    a busy pod serving the backlog is never drained for it."""
    pods = [pod("idle", "idle", last_used_ms=0), pod("busy", "busy", last_used_ms=9_000)]
    assert pods_to_drain(spec(idle_timeout_s=5, max_pods=4), pods, now_ms=10_000) == ["idle"]
