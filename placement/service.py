"""Runs the placement worker: subscribers, heartbeat listener and housekeeping loop."""

import asyncio
import logging
import time

from faststream.nats import NatsBroker
from nats.js.api import DeliverPolicy

from bus_schemas import streams
from bus_schemas.leases import LeaseRequested
from bus_schemas.nodes import NodeCapacity
from bus_schemas import permissions
from thaw_core import bus_auth, subscriber
from thaw_core.bus_auth import Credentials
from thaw_core.store import acl
from thaw_core.store.client import connect_redis_as
from thaw_core.subscriber import PullConsumer, subscribe
from thaw_core.shutdown import run_steps

from placement.backlog import BacklogScaler, poll
from placement.settings import PlacementSettings
from placement.worker import PlacementWorker

log = logging.getLogger(__name__)


def attach(broker: NatsBroker, worker: PlacementWorker, name: str, creds: Credentials | None = None) -> None:
    """The worker's capacity consumer: a durable of this worker's own (named by `name`), so
    every worker's index hears every node; a new one starts from each node's last report."""
    subscribe(broker, streams.placement_capacity(name), NodeCapacity, worker.on_capacity, creds=creds,
              deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)


def lease_consumer(js, worker: PlacementWorker, creds: Credentials | None = None) -> PullConsumer:
    """The worker's lease requests: one durable shared by every worker, so each request is
    placed once; a consumer without faststream, a lease request being the message placement
    handles most (thaw_core/subscriber.py `PullConsumer`)."""
    return PullConsumer(js, streams.PLACEMENT_LEASES, LeaseRequested, worker.on_lease_requested, creds)


def housekeeping_pause_s(settings: PlacementSettings, round_s: float) -> float:
    """The pause after a housekeeping round: housekeeping_every_s, or as long as the round took
    if that is longer. A round on a large fleet can take longer than the pause (it reads every
    node's version and a slice of the specs and pods), and back to back it would leave
    placement (same loop) half the time or less (bench/fleet_replay.py). So it takes at most
    half the worker's time."""
    return max(settings.housekeeping_every_s, round_s)


async def run_placement(settings: PlacementSettings, stop: asyncio.Event) -> None:
    r = connect_redis_as(settings.redis_url, acl.PLACEMENT, settings.redis_creds)
    creds = bus_auth.for_service(settings.nats_creds, permissions.PLACEMENT)
    broker, nc = await subscriber.connect(settings.nats_url, settings.name, creds)
    js = nc.jetstream()
    await bus_auth.streams_ready(js, creds)
    worker = PlacementWorker(settings, js, r)
    await worker.start()
    attach(broker, worker, settings.name, creds)
    await broker.start()
    leases = lease_consumer(js, worker, creds)
    await leases.start()

    async def on_heartbeat(msg):
        await worker.on_heartbeat(msg.data)

    sub = await nc.subscribe("node.heartbeat.*", cb=on_heartbeat)
    backlog = asyncio.create_task(poll(BacklogScaler(js, worker), settings.backlog_every_s, stop))
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await worker.housekeeping()
            except Exception:
                log.exception("housekeeping failed; retrying")
            try:
                await asyncio.wait_for(stop.wait(), housekeeping_pause_s(settings, time.monotonic() - started))
            except TimeoutError:
                pass
    finally:
        backlog.cancel()  # no pod placed for a queue while the connections close
        await asyncio.gather(backlog, return_exceptions=True)
        await run_steps(("unsubscribe from heartbeats", sub.unsubscribe),
                        ("stop consumers", lambda: subscriber.stop_consumers(broker)),
                        ("stop the lease consumer", leases.stop),
                        ("save the learned workload", worker.sync_workload),
                        ("close NATS", lambda: subscriber.close(broker, nc)), ("close Redis", r.aclose))
