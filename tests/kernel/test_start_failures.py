"""The crash-loop record: how long a function's next pod waits, when it counts as degraded, and
that a redeploy (another spec digest) or a healthy pod ends it (the Redis store is real)."""

import pytest

from thaw_core.store.start_failures import (
    DEGRADED_AFTER, MAX_DELAY_S, StartFailureLog, degraded_reason, delay_s, wait_left_s,
)


@pytest.mark.parametrize("failures, delay", [(0, 0), (1, 1), (2, 2), (3, 4), (6, 32), (7, MAX_DELAY_S),
                                             (1000, MAX_DELAY_S)])
def test_the_next_start_waits_twice_as_long_after_each_failure_up_to_the_cap(failures, delay):
    assert delay_s(failures) == delay


async def test_failures_count_in_a_row_for_one_spec_and_a_healthy_pod_ends_them(r):
    log = StartFailureLog(r)
    for n in range(1, DEGRADED_AFTER + 1):
        assert await log.record("f", "d1", f"exit code {n}", 10_000 * n) == n
    record = await log.get("f")
    assert (record.failures, record.reason, record.last_ms) == (DEGRADED_AFTER, f"exit code {DEGRADED_AFTER}",
                                                                10_000 * DEGRADED_AFTER)
    assert wait_left_s(record, "d1", record.last_ms + 1000) == delay_s(DEGRADED_AFTER) - 1
    assert degraded_reason(record, "d1").endswith(f"{DEGRADED_AFTER} pods in a row failed to start; "
                                                  f"last: exit code {DEGRADED_AFTER}")
    await log.clear("f", "d1")
    assert await log.get("f") is None


async def test_a_redeployed_spec_starts_afresh(r):
    log = StartFailureLog(r)
    for _ in range(DEGRADED_AFTER):
        await log.record("g", "old", "boom", 1000)
    record = await log.get("g")
    assert wait_left_s(record, "new", 1000) == 0 and degraded_reason(record, "new") == ""
    await log.clear("g", "new")  # a healthy pod of the new spec leaves nothing of the old to clear...
    assert await log.record("g", "new", "boom", 2000) == 1  # ...and its first failure counts from one


def test_one_failure_is_not_degraded():
    assert degraded_reason(None, "d") == ""
