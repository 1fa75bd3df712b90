"""The subscriber without faststream (thaw_core.subscriber.PullConsumer), on a real nats-server:
a typed handler, acks decided by its outcome as `subscribe` decides them, a fetch's handlers
started in stream order, and a stop that lets the message under way finish."""

import asyncio
import dataclasses

from bus_schemas import streams
from bus_schemas.leases import LeaseRequested
from thaw_core import bus
from thaw_core.subscriber import PullConsumer, Retry

from tests.conftest import eventually

SPEC = streams.PLACEMENT_LEASES


def request(fn: str) -> LeaseRequested:
    return LeaseRequested(fn=fn, want_pods=1, gateway="g", at_ms=1)


async def unsettled(js) -> int:
    info = await js.consumer_info(SPEC.stream, SPEC.durable)
    return info.num_ack_pending + info.num_pending


async def _none_left(js) -> bool:
    return await unsettled(js) == 0


async def test_handlers_of_a_fetch_start_in_stream_order_and_each_is_acked(js):
    for i in range(40):
        await bus.publish(js, f"lease.requested.fn{i}", request(f"fn{i}"), msg_id=f"order-{i}")
    started: list[str] = []

    async def handler(msg: LeaseRequested, subject: str) -> None:
        started.append(msg.fn)
        await asyncio.sleep(0.01)  # they overlap: the order is the order they began in

    consumer = PullConsumer(js, SPEC, LeaseRequested, handler)
    await consumer.start()
    try:
        await eventually(lambda: len(started) == 40, what="every request handled")
        assert started == [f"fn{i}" for i in range(40)]
        await eventually(lambda: _none_left(js), what="every message acked")
    finally:
        await consumer.stop()


async def test_an_undecodable_message_is_dropped_and_a_retry_comes_again(js):
    seen: list[str] = []

    async def handler(msg: LeaseRequested, subject: str) -> None:
        seen.append(msg.fn)
        if msg.fn == "busy" and seen.count("busy") == 1:
            raise Retry("not yet", delay_s=0.2)

    consumer = PullConsumer(js, SPEC, LeaseRequested, handler)
    await consumer.start()
    try:
        await bus.publish_bytes(js, "lease.requested.junk", b"{not json", msg_id="junk")
        await bus.publish(js, "lease.requested.busy", request("busy"), msg_id="busy")
        await eventually(lambda: seen.count("busy") == 2, what="the retried request handled again")
        await eventually(lambda: _none_left(js), what="nothing left to deliver")
        assert seen == ["busy", "busy"], "the undecodable message never reached the handler"
    finally:
        await consumer.stop()


async def test_stop_lets_the_message_under_way_finish_and_takes_no_more(js):
    began, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def handler(msg: LeaseRequested, subject: str) -> None:
        began.set()
        await release.wait()
        finished.append(msg.fn)

    consumer = PullConsumer(js, SPEC, LeaseRequested, handler)
    await consumer.start()
    await bus.publish(js, "lease.requested.slow", request("slow"), msg_id="slow")
    await asyncio.wait_for(began.wait(), 5)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done(), "stop waits for the handler under way"
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == ["slow"]
    await bus.publish(js, "lease.requested.late", request("late"), msg_id="late")
    await asyncio.sleep(0.3)
    assert finished == ["slow"]
    assert await unsettled(js) == 1, "the message after the stop waits for the next consumer"


async def test_a_message_with_an_odd_header_block_leaves_the_consumer_consuming(js, nats_server):
    # nats-py's fetch raises on a stored message whose header block it takes for a status reply
    # it does not know (here one that is not NATS/1.0 at all); anyone who may publish can store one
    from tests.platform.test_fuzz import raw_nats_publish

    handled: list[str] = []

    async def handler(msg: LeaseRequested, subject: str) -> None:
        handled.append(msg.fn)

    consumer = PullConsumer(js, SPEC, LeaseRequested, handler)
    await consumer.start()
    try:
        body = b'{"fn": "odd", "want_pods": 1, "gateway": "g", "at_ms": 1}'
        await raw_nats_publish(nats_server.port, [(b"lease.requested.odd", None, b"NATS/1.0 503 junk\r\nX: 1\r\n\r\n", body),
                                                  (b"lease.requested.odd", None, b"HTTP/1.1 200 OK\r\n\r\n", body)])
        await bus.publish(js, "lease.requested.after", request("after"), msg_id="after")
        await eventually(lambda: "after" in handled, what="the request published after the odd ones")
    finally:
        await consumer.stop()


async def test_the_next_fetch_is_handled_while_the_last_one_runs_and_a_third_waits_for_the_first(js):
    spec = dataclasses.replace(SPEC, pull_batch=5)
    for i in range(15):
        await bus.publish(js, f"lease.requested.fn{i}", request(f"fn{i}"), msg_id=f"overlap-{i}")
    started: list[str] = []
    first_fetch_done = asyncio.Event()

    async def handler(msg: LeaseRequested, subject: str) -> None:
        started.append(msg.fn)
        if int(msg.fn[2:]) < 5:
            await first_fetch_done.wait()

    consumer = PullConsumer(js, spec, LeaseRequested, handler)
    await consumer.start()
    try:
        await eventually(lambda: len(started) == 10, what="the second fetch handled beside the first")
        await asyncio.sleep(0.3)
        assert len(started) == 10, "a third fetch waits until the first fetch's messages are settled"
        first_fetch_done.set()
        await eventually(lambda: len(started) == 15, what="the third fetch, once the first was settled")
        assert started == [f"fn{i}" for i in range(15)], "started in stream order throughout"
        await eventually(lambda: _none_left(js), what="every message acked")
    finally:
        first_fetch_done.set()
        await consumer.stop()


async def test_a_durable_left_by_an_older_release_is_brought_to_the_spec_on_start(js):
    from nats.js.api import ConsumerConfig

    await js.add_consumer(SPEC.stream, config=ConsumerConfig(
        name=SPEC.durable, durable_name=SPEC.durable, filter_subject=SPEC.filter_subject, max_ack_pending=4))
    consumer = PullConsumer(js, SPEC, LeaseRequested, lambda msg, subject: asyncio.sleep(0))
    await consumer.start()
    try:
        info = await js.consumer_info(SPEC.stream, SPEC.durable)
        assert info.config.max_ack_pending == SPEC.max_ack_pending, "two fetches of every worker fit"
    finally:
        await consumer.stop()
