"""One fleet replay through the real system: fresh servers, the simulated fleet, N real placement
workers, the requests published in order, and what the store holds at the end.

Sequencing, so that the comparison with the offline replay is fair: every function is deployed
and the fleet's capacity is in every worker's index before the first request (the bench waits
until each worker's capacity consumer has settled every node's report); then the requests are
published in the replay's order, each PubAck awaited before the next, as fast as the bus takes
them. They queue in the LEASES stream. Several workers share the queue and so interleave;
their allocation is measured the same way and reported.

Two ways to ask, both through the bus: `queued`, every request is in the stream before the
workers take the first (their lease consumer paused meanwhile, a nats-server 2.11 consumer
pause) and the clock starts when it resumes: the platform drains a backlog, and this process
publishes nothing meanwhile; `live`, the clock starts at the first publish and the requests
are published while the workers place them, so the publisher (a gateway's work, on another
machine in a real fleet) takes its share of this host's CPU from them.

Order: a worker takes lease requests a fetch at a time, in stream order, and places a fetch's
requests as one batch in the order its consumer starts their handlers, which is the fetch's
order: nothing before a handler's call waits (thaw_core/subscriber.py PullConsumer), and each
handler's first wait is joining the batch (placement/batches.py). So one worker decides in the offline
order over an index that holds its own earlier commits, and its free-running run is checked
against the offline replay. `paced` (one request in flight at a time, each published once the
one before it is settled) makes that order hold whatever the consumer does; it is far slower.

The fleet in the store before the workers start: a placement worker records each node's
capacity report in the store and, on every report of a node its index lacks, reads the whole
fleet back and rebuilds its index (placement/worker.py `on_capacity`). A worker starting on a
fleet of 1,213 fresh reports does that 1,213 times over a growing fleet, minutes of work
(measured: ~700 nodes absorbed in 3 minutes). The bench writes the same records first
(`Nodes.upsert_capacity` and a heartbeat per node, what `on_capacity` writes), so a starting
worker builds its index once and every report then finds its node already held; the reports
still go through the bus and every worker still consumes them.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from nats.js.errors import NotFoundError

from bus_schemas import permissions, streams
from thaw_core import bus
from thaw_core.clock import now_ms
from thaw_core.store.client import connect_redis
from thaw_core.store import acl
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods
from placement.engine.model import NodeView, PodRequest
from placement.engine.workload import WorkloadProfile

from bench.fleet import measure, requests as fleet_requests
from bench.fleet.agents import SimulatedFleet, agent_user, node_capacity
from bench.fleet.servers import Platform, start_platform

T = TypeVar("T")
NODE_TIMEOUT_S = 10.0  # the workers' --node-timeout (python -m placement's default)
WORKLOAD_SYNC_EVERY_S = 5.0  # PlacementSettings.workload_sync_every_s
HEARTBEAT_S = 1.0  # agents/settings.py AgentSettings.heartbeat_s, the agents' default


@dataclass
class Outcome:
    """One run's measurements."""

    workers: int
    queued: bool  # every request in the stream before the workers took the first
    requests: int
    placed: int  # pods the store holds at the end
    assigned: int  # place.assigned messages the simulated agents received
    started: int  # pods they made idle
    levels: dict[int, float]  # allocation % by arrived level, from the store
    allocation_end_pct: float  # the ledger's GPU milli reserved over the fleet's, at the end
    placement_s: float  # first request published (queued: the consumer resumed) -> last assignment received
    decisions_s: float  # first request published -> every request settled by the workers
    publish_s: float  # publishing every request
    unanswered: list[str] = field(default_factory=list)
    where_by_fn: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # fn -> node, GPUs
    profile_matches: bool = False  # the learned workload the workers read equals the offline profile
    setup_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds by role, first request -> all settled
    cpu_window_s: float = 0.0  # ... over this much wall time

    @property
    def placements_per_worker_cpu_s(self) -> float:
        """Pods placed per CPU second the placement workers used: what one worker could place
        a second with a core to itself, were nothing else in its way."""
        used = self.cpu_s.get("placement workers", 0.0)
        return self.placed / used if used > 0 else 0.0

    @property
    def final(self) -> float:
        return self.levels[max(self.levels)]

    @property
    def placements_per_s(self) -> float:
        return self.placed / self.placement_s if self.placement_s > 0 else 0.0

    @property
    def decisions_per_s(self) -> float:
        return self.requests / self.decisions_s if self.decisions_s > 0 else 0.0


def run_once(state_dir: Path, nodes: list[NodeView], requests: list[PodRequest], trace: list[PodRequest],
             policy: str, workers: int, say: Callable[[str], None], paced: bool = False,
             heartbeat_s: float = HEARTBEAT_S, profile_dir: Path | None = None, limit: int = 0,
             queued: bool = False) -> Outcome:
    """Replay `requests` (in order) on `nodes` with `workers` placement workers, fresh servers
    under `state_dir`; `trace` (every pod of the trace) gives the learned workload's history.
    `paced`: one request in flight at a time; `queued`: every request in the stream before the
    workers take the first (module docstring). `limit`: ask for the first `limit` pods only (0:
    all), every function still deployed - a shorter throughput run."""
    if paced and queued:
        raise ValueError("a run is paced or queued, not both")
    t = time.monotonic()
    platform = start_platform(state_dir, [n.name for n in nodes])
    setup = dict(platform.setup_s)
    say(f"servers up in {time.monotonic() - t:.1f}s (nats {platform.nats.url}, valkey {platform.redis.url}; "
        f"{len(nodes)} nodes' bus users)")
    try:
        # the event loop every Thaw service runs on (thaw_core/process.py), the agents' included
        outcome = uvloop.run(_replay(platform, nodes, requests, trace, policy, workers, say, paced, queued,
                                     heartbeat_s, profile_dir, limit))
    finally:
        platform.stop()
    outcome.setup_s = {**setup, **outcome.setup_s}
    return outcome


async def _replay(platform: Platform, nodes: list[NodeView], requests: list[PodRequest], trace: list[PodRequest],
                  policy: str, workers: int, say: Callable[[str], None], paced: bool, queued: bool, heartbeat_s: float,
                  profile_dir: Path | None, limit: int) -> Outcome:
    setup: dict[str, float] = {}
    operator = platform.bus_creds(permissions.OPERATOR)
    ops = connect_redis(platform.redis.url, platform.store_creds(acl.OPERATOR))
    agents_store = connect_redis(platform.redis.url, platform.store_creds(acl.AGENT))
    nc = await bus.connect(platform.nats.url, "fleet-replay", operator)
    js = nc.jetstream()
    fleet = SimulatedFleet(platform.nats.url, [node_capacity(n, fleet_requests.GPU_VRAM_MIB) for n in nodes],
                           {n.name: platform.bus_creds(agent_user(n.name)) for n in nodes}, operator,
                           agents_store, heartbeat_s)
    try:
        await _timed(setup, "agents connect and report", _start_fleet(fleet))
        say(f"{len(nodes)} simulated agents connected, each as its own bus user, capacity reported "
            f"({setup['agents connect and report']:.1f}s)")
        names = [fleet_requests.fn_name(i) for i in range(len(requests))]
        profile_ok = await _timed(setup, "deploy and history", _deploy(ops, names, requests, trace, policy))
        say(f"{len(names)} functions deployed, learned workload seeded ({setup['deploy and history']:.1f}s); "
            f"the workers' profile {'equals' if profile_ok else 'DIFFERS FROM'} the offline replay's")
        await _timed(setup, "workers ready", _start_workers(js, platform, fleet, ops, workers, profile_dir))
        say(f"{workers} placement worker(s) up, every node in their index ({setup['workers ready']:.1f}s)")
        since = now_ms()
        asked = names[:limit] if limit else names
        timings = await _publish_and_wait(js, ops, fleet, platform, asked, say, paced, queued)
        if profile_dir is not None:
            await asyncio.to_thread(platform.dump_profiles)
        state = await measure.committed(ops)
        missing = await measure.unanswered(ops, asked, state, since)
        return Outcome(workers=workers, queued=queued, requests=len(asked), placed=len(state.milli_by_fn),
                       assigned=fleet.arrivals.assigned, started=fleet.arrivals.started,
                       levels=measure.level_allocation(requests[:len(asked)], asked, state),
                       allocation_end_pct=state.allocation_pct, unanswered=missing, setup_s=setup,
                       profile_matches=profile_ok, where_by_fn=state.where_by_fn, **timings)
    finally:
        await fleet.close()
        await nc.close()
        await ops.aclose()
        await agents_store.aclose()


async def _timed(took: dict[str, float], step: str, coro: Awaitable[T]) -> T:
    """`coro`'s result; its duration goes to took[step]."""
    t = time.monotonic()
    try:
        return await coro
    finally:
        took[step] = time.monotonic() - t


async def _start_fleet(fleet: SimulatedFleet) -> None:
    await fleet.open()
    await fleet.start()


async def _deploy(store, names: list[str], requests: list[PodRequest], trace: list[PodRequest], policy: str) -> bool:
    """Deploy a function per request and seed the learned workload; True when the profile the
    workers will read equals the offline replay's."""
    await fleet_requests.deploy(store, [fleet_requests.function_spec(n, r, policy) for n, r in zip(names, requests)])
    table = await fleet_requests.seed_history(store, fleet_requests.history(trace, policy))
    return fleet_requests.same_profile(fleet_requests.learned_profile(table), WorkloadProfile.from_requests(trace))


async def _start_workers(js, platform: Platform, fleet: SimulatedFleet, store, workers: int,
                         profile_dir: Path | None) -> None:
    await _record_fleet(store, fleet)  # last: the heartbeats it writes must be fresh when the workers read them
    names = platform.start_workers(workers, NODE_TIMEOUT_S, profile_dir)
    await _workers_ready(js, platform, names, len(fleet.capacities))
    # A worker derives its profile at each sync of the learned workload (every
    # workload_sync_every_s), measuring vRAM shares in milli of the fleet's usual GPU: the
    # sync at start-up ran before any node was known, so wait for one with the whole fleet.
    await asyncio.sleep(WORKLOAD_SYNC_EVERY_S + 1)


async def _record_fleet(store, fleet: SimulatedFleet) -> None:
    """What a placement worker's `on_capacity` records for each node (module docstring)."""
    nodes = Nodes(store)
    caps = list(fleet.capacities.values())
    for at in range(0, len(caps), 64):
        await asyncio.gather(*(nodes.upsert_capacity(c) for c in caps[at:at + 64]))
        await asyncio.gather(*(nodes.heartbeat(c.node, now_ms()) for c in caps[at:at + 64]))


async def _workers_ready(js, platform: Platform, names: list[str], node_count: int, timeout_s: float = 300) -> None:
    """Until every worker's capacity durable has handed over and settled every node's report,
    and the shared lease consumer has a pull waiting from each worker."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        platform.check_workers()
        if all([await _capacity_settled(js, n, node_count) for n in names]) and await _lease_pulls(js) >= len(names):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"placement workers not ready within {timeout_s:.0f}s; see {platform.state_dir / 'logs'}")


async def _capacity_settled(js, worker: str, node_count: int) -> bool:
    spec = streams.placement_capacity(worker)
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= 1 \
        and info.ack_floor.consumer_seq >= node_count


async def _lease_pulls(js) -> int:
    try:
        info = await js.consumer_info(streams.PLACEMENT_LEASES.stream, streams.PLACEMENT_LEASES.durable)
    except NotFoundError:
        return 0
    return info.num_waiting or 0


async def _publish_and_wait(js, store, fleet: SimulatedFleet, platform: Platform, names: list[str],
                            say: Callable[[str], None], paced: bool, queued: bool,
                            timeout_s: float = 3600) -> dict[str, Any]:
    """Publish every request in order while reporting progress; return once the workers settled
    every request and every pod the store holds reached the agents. Returns the timings and the
    CPU each role used meanwhile. `queued`: every request is in the stream before the workers
    take the first (their lease consumer paused meanwhile), and the clock starts at the resume."""
    published = [0]
    if queued:
        await _pause_leases(js, True)
        await fleet_requests.publish_requests(js, names, lambda n: published.__setitem__(0, n))
        say(f"{len(names)} requests queued in the stream, the workers' lease consumer paused; resuming it")
    cpu_before = measure.cpu_by_group(platform.processes())
    start = time.monotonic()
    reporter = asyncio.create_task(_progress(js, fleet, published, len(names), start, say))
    try:
        first = time.monotonic()
        if queued:
            await _pause_leases(js, False)
        async def settled_now() -> None:
            # Asking JetStream in a tight loop took a core from the worker it waits for: look
            # again when an assignment arrives, or every 5 ms (an unplaceable pod sends none).
            while True:
                fleet.heard.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fleet.heard.wait(), 0.005)
                if await measure.lease_backlog(js) == 0:
                    return
        if not queued:
            await fleet_requests.publish_requests(js, names, lambda n: published.__setitem__(0, n),
                                                  settled_now if paced else None)
        published[0] = len(names)
        publish_s = time.monotonic() - first
        deadline = first + timeout_s
        while await measure.lease_backlog(js) > 0:
            platform.check_workers()
            if time.monotonic() > deadline:
                raise TimeoutError(f"requests still unsettled after {timeout_s:.0f}s")
            await asyncio.sleep(0.02)
        settled = time.monotonic()
        pods = Pods(store)
        while fleet.arrivals.assigned < len(await pods.live_ids()):
            if time.monotonic() > deadline:
                raise TimeoutError("assignments missing at the agents")
            await asyncio.sleep(0.05)
        cpu_after, cpu_window_s = measure.cpu_by_group(platform.processes()), time.monotonic() - first
        await fleet.settled()
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
    last = fleet.arrivals.last_s or settled
    return {"placement_s": last - first, "decisions_s": max(settled, last) - first, "publish_s": publish_s,
            "cpu_s": {group: cpu_after[group] - cpu_before[group] for group in cpu_after},
            "cpu_window_s": cpu_window_s}


async def _pause_leases(js, pause: bool) -> None:
    """Pause (or resume) the workers' shared lease consumer: nats-server 2.11's consumer pause,
    which nats-py has no call for, so its JetStream API request as the nats CLI sends it."""
    spec = streams.PLACEMENT_LEASES
    body = {"pause_until": "2099-01-01T00:00:00Z"} if pause else {}
    reply = await js._nc.request(f"{permissions.JS_API}.CONSUMER.PAUSE.{spec.stream}.{spec.durable}",
                                 json.dumps(body).encode(), timeout=5)
    answer = json.loads(reply.data)
    if "error" in answer or answer.get("paused") is not pause:
        raise RuntimeError(f"could not {'pause' if pause else 'resume'} {spec.durable}: {answer}")


async def _progress(js, fleet: SimulatedFleet, published: list[int], total: int, start: float,
                    say: Callable[[str], None], every_s: float = 2.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            backlog = await measure.lease_backlog(js)
        except Exception:  # progress only; the run's own checks raise
            backlog = -1
        a = fleet.arrivals
        say(f"  {time.monotonic() - start:6.1f}s  published {published[0]:6d}/{total}  "
            f"unsettled {backlog:6d}  assigned {a.assigned:6d}  idle {a.started:6d}  "
            f"heartbeat gap max {a.heartbeat_gap_max_s:4.1f}s")
