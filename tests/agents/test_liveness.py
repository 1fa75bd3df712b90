"""The snapshotter's liveness as the agent decides it, from ping outcomes alone."""

import pytest

from agents.liveness import Change, SnapshotterLiveness

SUBJECT = "snapshot.ping.node-a"


def watch(expected: bool = True, down_after: int = 3) -> SnapshotterLiveness:
    return SnapshotterLiveness(SUBJECT, down_after, expected, now_s=0.0)


def test_an_answer_offers_its_capabilities_and_the_node_stays_healthy():
    live = watch()
    assert live.answered(("criu", "cuda-checkpoint"), started_ms=5, now_s=1.0) is None
    assert live.snapshot_support == ("criu", "cuda-checkpoint") and live.degraded == ""


def test_fewer_misses_than_down_after_change_nothing():
    live = watch()
    live.answered(("criu",), started_ms=5, now_s=1.0)
    assert [live.missed(now_s=t) for t in (2.0, 3.0)] == [None, None]
    assert not live.down and live.snapshot_support == ("criu",) and live.degraded == ""


def test_down_after_consecutive_misses_the_node_offers_nothing_and_says_why():
    live = watch()
    live.answered(("criu",), started_ms=5, now_s=1.0)
    changes = [live.missed(now_s=t) for t in (2.0, 3.0, 4.0, 5.0)]
    assert changes == [None, None, Change.DOWN, None], "DOWN once, not once per beat"
    assert live.snapshot_support == ()
    assert live.degraded == ("snapshotter not answering on snapshot.ping.node-a for 3.0s: "
                             "pods cold-start until it is back")


def test_an_answer_in_between_resets_the_count():
    live = watch()
    live.missed(now_s=1.0)
    live.missed(now_s=2.0)
    live.answered(("criu",), started_ms=5, now_s=3.0)
    live.missed(now_s=4.0)
    live.missed(now_s=5.0)
    assert not live.down and live.misses == 2


def test_the_first_answer_after_down_is_back_and_clears_the_reason():
    live = watch(down_after=1)
    live.missed(now_s=1.0)
    assert live.answered(("criu",), started_ms=5, now_s=2.0) is Change.BACK
    assert live.degraded == "" and live.snapshot_support == ("criu",)


def test_a_snapshotter_that_never_answered_is_down_counting_from_the_start():
    live = watch()
    assert [live.missed(now_s=t) for t in (1.0, 2.0, 3.5)][-1] is Change.DOWN
    assert "for 3.5s" in live.degraded


def test_a_node_not_expecting_a_snapshotter_is_never_degraded():
    live = watch(expected=False)
    for t in range(10):
        live.missed(now_s=float(t))
    assert live.down and live.degraded == "" and live.snapshot_support == ()


def test_a_new_start_time_is_a_restart():
    live = watch()
    live.answered(("criu",), started_ms=5, now_s=1.0)
    assert live.answered(("criu",), started_ms=5, now_s=2.0) is None
    assert live.answered(("criu",), started_ms=9, now_s=3.0) is Change.RESTARTED


def test_down_after_must_be_positive():
    with pytest.raises(ValueError, match="down_after"):
        watch(down_after=0)
