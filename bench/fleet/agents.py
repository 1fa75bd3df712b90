"""Simulated node agents: a whole fleet in one asyncio process, with a mock runtime.

Each simulated node does what a real agent (agents/service.py, agents/lifecycle.py) does on the
bus and in the store, minus the worker process:

- logs in as its own bus user (`agent-<node>`, the platform's per-node credentials) on a
  connection of its own, and publishes its `NodeCapacity` on `node.capacity.<node>` and a
  `NodeHeartbeat` listing its pods on `node.heartbeat.<node>` every `heartbeat_s`, so
  nats-server checks every node's publish permissions as it does for real agents;
- for each `PodAssigned` to it, moves the pod pending -> starting -> idle through
  `thaw_core.pod_states.PodStates` as the agents' store user, publishing the `pod.state`
  events on its own connection (the mock runtime starts nothing, so a start is two
  transitions), and lists the pod in its heartbeats from then on, so placement's reclaim of
  unreported pods never fires.

One shortcut, for cost: placements are consumed by ONE durable pull consumer on
`place.assigned.>` over the operator's connection, not by 1,213 per-node durables
(`agent-<node>`, filter `place.*.<node>`): 1,213 durables, each with its own fetch loop, in the
one process that is meant to be cheap (not measured; a choice for cost). What that bypasses: the
subscribe-side check that node X's agent may consume only `place.*.X` (bus_schemas.permissions
`agent`); each message is still handed to the simulated node it names, and the store checks
every transition as it does for a real agent.
"""

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis.asyncio as redis
from nats.aio.client import Client

from bus_schemas import permissions, streams, subjects
from bus_schemas.codec import decode
from bus_schemas.nodes import GpuCapacity, NodeCapacity, NodeHeartbeat
from bus_schemas.pods import PodAssigned, PodState
from thaw_core import bus
from thaw_core.bus_auth import Credentials
from thaw_core.clock import now_ms
from thaw_core.pod_states import PodStates
from placement.engine.model import NodeView

log = logging.getLogger(__name__)

CONSUMER = "fleet-replay-agents"  # the one durable the simulated agents share (see module docstring)
STARTING_ONLY_FROM = frozenset({PodState.PENDING})
IDLE_ONLY_FROM = frozenset({PodState.STARTING})


def node_capacity(view: NodeView, gpu_vram_mib: int) -> NodeCapacity:
    """What node `view` reports: its CPU, memory and GPU models, every GPU `gpu_vram_mib` large
    (why one size: bench/fleet/requests.py)."""
    gpus = tuple(GpuCapacity(index=g.index, model=g.model, vram_mib=gpu_vram_mib, uuid=f"{view.name}-gpu{g.index}")
                 for g in view.gpus)
    return NodeCapacity(node=view.name, cpu_milli=view.cpu_milli, memory_mib=view.memory_mib, gpus=gpus,
                        gpu_source="mock", at_ms=now_ms())


@dataclass
class Arrivals:
    """What the simulated agents received: assignments, when, and the pods they made idle."""

    assigned: int = 0
    started: int = 0
    start_failed: int = 0
    first_s: float | None = None  # time.monotonic() of the first assignment received
    last_s: float | None = None  # ... and of the last
    # The longest time between two heartbeats of one node (every node is sent in one pass): over
    # placement's unreported_grace_s (5 s), a pod the agents hold may be reclaimed as unreported
    # because this process fell behind, not because placement did.
    heartbeat_gap_max_s: float = 0.0
    pods_by_node: dict[str, set[str]] = field(default_factory=dict)


class SimulatedFleet:
    """The fleet's agents. `open` connects every node, `start` reports capacity and starts the
    heartbeats and the placement consumer, `close` ends them."""

    def __init__(self, url: str, capacities: list[NodeCapacity], node_creds: dict[str, Credentials],
                 operator: Credentials, store: redis.Redis, heartbeat_s: float):
        self._url, self._operator, self._store = url, operator, store
        self.capacities = {c.node: c for c in capacities}
        self._node_creds, self._heartbeat_s = node_creds, heartbeat_s
        self._links: dict[str, Client] = {}
        self._states: dict[str, PodStates] = {}
        self._operator_nc: Client | None = None
        self._tasks: list[asyncio.Task] = []
        self._starts: set[asyncio.Task] = set()
        self._start_slots = asyncio.Semaphore(64)
        self.arrivals = Arrivals(pods_by_node={n: set() for n in self.capacities})
        self.heard = asyncio.Event()  # set at each assignment received

    async def open(self, parallel: int = 64) -> None:
        """One connection per node, as its own bus user; one operator connection for placements."""
        gate = asyncio.Semaphore(parallel)

        async def link(node: str) -> None:
            async with gate:
                nc = await bus.connect(self._url, f"fleet-agent-{node}", self._node_creds[node])
                self._links[node] = nc
                self._states[node] = PodStates(self._store, nc.jetstream())
        await asyncio.gather(*(link(n) for n in self.capacities))
        self._operator_nc = await bus.connect(self._url, "fleet-replay-agents", self._operator)

    async def start(self) -> None:
        await self.report_capacity()
        self._tasks.append(asyncio.create_task(self._heartbeats()))
        self._tasks.append(asyncio.create_task(self._consume()))

    async def report_capacity(self) -> None:
        """Every node's capacity on its own subject, from its own connection."""
        async def report(cap: NodeCapacity) -> None:
            await bus.publish(self._links[cap.node].jetstream(), subjects.node_capacity(cap.node), cap,
                              msg_id=f"cap:{cap.node}:{cap.at_ms}")
        await asyncio.gather(*(report(c) for c in self.capacities.values()))

    async def _heartbeats(self) -> None:
        last: float | None = None
        while True:
            started = time.monotonic()
            if last is not None:
                self.arrivals.heartbeat_gap_max_s = max(self.arrivals.heartbeat_gap_max_s, started - last)
            last = started
            at = now_ms()
            for node, nc in self._links.items():
                hb = NodeHeartbeat(node=node, at_ms=at, pods=tuple(sorted(self.arrivals.pods_by_node[node])))
                await bus.publish_core(nc, subjects.node_heartbeat(node), hb)
            await asyncio.sleep(self._heartbeat_s)

    async def _consume(self) -> None:
        assert self._operator_nc is not None
        js = self._operator_nc.jetstream()
        sub = await js.pull_subscribe(permissions.every(subjects.PLACE_ASSIGNED), durable=CONSUMER,
                                      stream=streams.PLACEMENT.name)
        while True:
            try:
                msgs = await sub.fetch(512, timeout=0.2)
            except TimeoutError:  # nats-py raises asyncio's (the builtin) or its subclass
                continue
            for msg in msgs:
                self._on_assigned(decode(msg.data, PodAssigned))
                await msg.ack()

    def _on_assigned(self, a: PodAssigned) -> None:
        t = time.monotonic()
        arrivals = self.arrivals
        arrivals.assigned += 1
        arrivals.first_s = arrivals.first_s or t
        arrivals.last_s = t
        arrivals.pods_by_node.setdefault(a.node, set()).add(a.pod)  # listed in heartbeats from now on
        self.heard.set()
        task = asyncio.create_task(self._start_pod(a))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    async def _start_pod(self, a: PodAssigned) -> None:
        """The mock runtime: pending -> starting -> idle, each a checked store transition with
        its event, as agents/lifecycle.py makes them for a cold start that became ready."""
        states = self._states.get(a.node)
        if states is None:
            log.warning("an assignment to %s, a node this fleet does not have", a.node)
            return
        async with self._start_slots:
            moved = await states.move(a.pod, PodState.STARTING, now_ms(), only_from=STARTING_ONLY_FROM)
            if moved.applied:
                now = now_ms()
                moved = await states.move(a.pod, PodState.IDLE, now, IDLE_ONLY_FROM,
                                          endpoint=f"mock://{a.node}/{a.pod}", last_used_ms=now)
        if moved.applied:
            self.arrivals.started += 1
        else:
            self.arrivals.start_failed += 1

    async def settled(self) -> None:
        """Wait for the pod starts under way."""
        while self._starts:
            await asyncio.gather(*list(self._starts), return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.settled()
        await close_all([*self._links.values(), *([self._operator_nc] if self._operator_nc else [])])


async def close_all(connections: Iterable[Client]) -> None:
    await asyncio.gather(*(nc.close() for nc in connections), return_exceptions=True)


def agent_user(node: str) -> str:
    return permissions.user_name(permissions.AGENT, node)
