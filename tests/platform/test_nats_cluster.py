"""A 3-server NATS cluster with the platform's streams at R3 (issue 11): kill -9 the server that
leads a stream in the middle of a burst of publishes, and no acked event is lost, none is stored
twice, and a durable pull consumer carries on."""

import asyncio
import collections
import time

import nats
import pytest

from bus_schemas import headers as H
from bus_schemas.streams import ALL_STREAMS, LEASES
from thaw_core import bus, nats_cluster

EVENTS = 2000
KILL_AFTER = 600  # acked events before the leader dies
SUBJECT = "lease.requested.cluster-test"
GIVE_UP_S = 30  # a cluster that has not taken publishes again by then has failed the test


@pytest.fixture
def cluster(tmp_path):
    c = nats_cluster.start_cluster(tmp_path, size=3)
    try:
        yield c
    finally:
        c.stop()


async def test_every_platform_stream_is_provisioned_with_three_replicas(cluster):
    nc = await bus.connect(",".join(cluster.urls), "provision")  # the comma-separated form operators write
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, replicas=3)
        for spec in ALL_STREAMS:
            info = await js.stream_info(spec.name)
            assert info.config.num_replicas == 3, spec.name
            assert info.cluster.leader and len(info.cluster.replicas or []) == 2, spec.name
    finally:
        await nc.close()


async def test_killing_the_stream_leader_loses_no_acked_event(cluster):
    # bounded: a stream that cannot elect a new leader (one replica) would wait forever
    await asyncio.wait_for(publish_through_a_leader_kill(cluster), timeout=150)


async def publish_through_a_leader_kill(cluster) -> None:
    nc = await bus.connect(cluster.urls, "publisher")
    reader = await bus.connect(cluster.urls, "reader")
    consumer = None
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js, replicas=3)
        leader = (await js.stream_info(LEASES.name)).cluster.leader
        consumer = asyncio.create_task(_consume(reader.jetstream(), until=EVENTS))

        acked, failed, kill_at, first_ack_after = await _publish_killing(js, cluster, leader)

        seen_by_consumer = await asyncio.wait_for(consumer, 60) if not failed else set()
        stored = await _stored_msg_ids(js)
        new_leader = (await js.stream_info(LEASES.name)).cluster.leader
    finally:
        if consumer is not None:
            consumer.cancel()  # still reading when the test failed before it finished
        await reader.close()
        await nc.close()

    print(f"\nleader {leader} killed after {KILL_AFTER} acks; first ack after the kill "
          f"{(first_ack_after - kill_at) * 1000 if first_ack_after else -1:.0f} ms later; "
          f"new leader {new_leader}; {len(acked)} acked, {len(failed)} not acked")
    assert new_leader != leader
    assert len(acked) == EVENTS, f"publishes given up: {failed[:5]}"
    counts = collections.Counter(stored)
    assert [i for i in acked if counts[i] != 1] == [], "acked events lost or stored twice"
    assert set(stored) <= set(acked) | set(failed)
    assert set(acked) <= seen_by_consumer, "the consumer stopped short of the acked events"


async def _publish_killing(js, cluster, leader):
    """Publish EVENTS events one after another; kill -9 `leader` after KILL_AFTER acks. Returns
    the acked msg ids, those given up, when the kill happened and when the next ack came."""
    acked, failed, kill_at, first_ack_after = [], [], None, None
    for n in range(EVENTS):
        msg_id = f"evt-{n}"
        if n == KILL_AFTER:
            cluster.kill(cluster.index_of(leader))
            kill_at = time.monotonic()
        try:
            await bus.publish_bytes(js, SUBJECT, msg_id.encode(), msg_id)
        except nats.errors.Error:
            failed.append(msg_id)
            if time.monotonic() - kill_at > GIVE_UP_S:  # bounded: each publish retries for ~15 s
                return acked, failed + [f"evt-{rest}" for rest in range(n + 1, EVENTS)], kill_at, first_ack_after
            continue
        acked.append(msg_id)
        if kill_at is not None and first_ack_after is None:
            first_ack_after = time.monotonic()
    return acked, failed, kill_at, first_ack_after


async def _consume(js, until: int) -> set[str]:
    """A durable pull consumer (R3, like its stream) reading while the leader dies: the msg ids
    it was given, once it has `until` distinct ones. Redeliveries after the failover are fine."""
    sub = await js.pull_subscribe(SUBJECT, durable="cluster-test", stream=LEASES.name)
    seen: set[str] = set()
    while len(seen) < until:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except (TimeoutError, nats.errors.Error):  # no consumer leader yet, a reconnect
            continue
        for msg in msgs:
            seen.add(msg.headers[H.MSG_ID])
            try:
                await msg.ack()
            except nats.errors.Error:
                pass  # the ack is lost with the server; the message comes again
    return seen


async def _stored_msg_ids(js) -> list[str]:
    """Every message's Nats-Msg-Id in the stream, in order, read by sequence."""
    last = (await _retrying(js.stream_info, LEASES.name)).state.last_seq
    return [(await _retrying(js.get_msg, LEASES.name, seq)).headers[H.MSG_ID] for seq in range(1, last + 1)]


async def _retrying(request, *args, for_s: float = 30):
    """A JetStream API request, again while the stream has no leader yet (timeout, 503)."""
    deadline = time.monotonic() + for_s
    while True:
        try:
            return await request(*args)
        except (TimeoutError, nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
