"""The async queue's depth per function, read from a real JetStream: one STREAM.INFO request
for all functions, counting a call until it is final."""

import nats
import pytest

from bus_schemas import permissions as P
from bus_schemas import streams, subjects
from thaw_core.async_queue import by_function, queued_calls

from tests.kernel.test_bus_auth import platform_bus  # noqa: F401 (a fixture: a bus with every role's user)


def test_counts_add_up_per_function_and_claims_can_be_left_out():
    counts = {"infer.async.a": 2, "infer.async.a.accepted": 3, "infer.async.b.accepted": 1,
              "infer.async.c": 4, "infer.async.d.other": 9, "infer.async": 9}
    assert by_function(counts) == {"a": 5, "b": 1, "c": 4}
    assert by_function(counts, accepted_only=True) == {"a": 3, "b": 1}


async def test_a_call_counts_while_queued_and_running_and_not_once_acked(js):
    for i in range(3):
        await js.publish(subjects.infer_async_accepted("slow"), b"x", headers={"Nats-Msg-Id": f"s{i}"})
    await js.publish(subjects.infer_async("other"), b"x")
    assert await queued_calls(js) == {"slow": 3, "other": 1}
    assert await queued_calls(js, accepted_only=True) == {"slow": 3}

    sub = await js.pull_subscribe(streams.GATEWAY_ASYNC.filter_subject, durable="test-async",
                                  stream=streams.INFER_ASYNC.name)
    taken = await sub.fetch(4, timeout=2)
    assert len(taken) == 4
    assert await queued_calls(js) == {"slow": 3, "other": 1}, "a taken call, not final yet, still counts"
    for msg in taken:
        await msg.ack_sync()  # a work queue removes an acked message
    assert await queued_calls(js) == {}


@pytest.mark.parametrize("user", [P.PLACEMENT, P.GATEWAY])
async def test_placement_and_the_gateway_may_count_the_queue_with_their_own_rights(platform_bus, user):
    """Counting needs only STREAM.INFO, which every service has; no right to read the calls."""
    session = await nats.connect(platform_bus.url, allow_reconnect=False,
                                 **platform_bus.creds[user].connect_options())
    try:
        assert await queued_calls(session.jetstream()) == {}
    finally:
        await session.close()
