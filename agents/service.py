"""The node agent: GPU discovery, capacity and heartbeats, placement consumer, worker watch, and
its snapshotter's liveness (pinged every heartbeat; see agents/liveness.py)."""

import asyncio
import contextlib
import logging

import aiohttp
import msgspec

from bus_schemas import streams, subjects
from bus_schemas.nodes import NodeCapacity, NodeHeartbeat
from bus_schemas.pods import PlacementMessage, PodAssigned
from bus_schemas import permissions
from thaw_core import bus, bus_auth, subscriber
from thaw_core.clock import now_ms
from thaw_core.store import acl
from thaw_core.store.client import connect_redis_as
from thaw_core.store.functions import Functions
from thaw_core.pod_states import PodStates
from thaw_core.store.pods import Pods
from thaw_core.store.start_failures import StartFailureLog
from thaw_core.subscriber import subscribe
from thaw_core.shutdown import run_steps

from agents import gpus
from agents.identity import agent_token
from agents.lifecycle import Lifecycle
from agents.liveness import Change, SnapshotterLiveness
from agents.logs import LogReader
from agents.reconcile import reconcile
from agents.records import WorkerRecords
from agents.runtime.process import ProcessRuntime
from agents.settings import AgentSettings
from agents.snapshots import SnapshotClient, SnapshotterSilent
from agents.vram import MockMeter, NvmlMeter, VramWatch

log = logging.getLogger(__name__)


def make_runtime(settings: AgentSettings):
    if settings.runtime == "process":
        return ProcessRuntime(settings.state_dir / "logs", settings.node, agent_token(settings.state_dir),
                              sandbox=settings.sandbox, pod_cidr=settings.pod_cidr)
    if settings.runtime == "container":
        from agents.runtime.container import ContainerRuntime

        return ContainerRuntime.from_settings(settings)
    raise ValueError(f"unknown runtime {settings.runtime!r}: use 'process' or 'container'")


async def run_agent(settings: AgentSettings, stop: asyncio.Event) -> None:
    r = connect_redis_as(settings.redis_url, acl.AGENT, settings.redis_creds)
    creds = bus_auth.for_service(settings.nats_creds, permissions.AGENT, settings.node)
    broker, nc = await subscriber.connect(settings.nats_url, f"agent-{settings.node}", creds)
    js = nc.jetstream()
    await bus_auth.streams_ready(js, creds)
    gpu_list, source = gpus.discover(settings.mock_gpus, settings.force_mock_gpus)
    capacity = NodeCapacity(node=settings.node, cpu_milli=settings.cpu_milli, memory_mib=settings.memory_mib,
                            gpus=gpu_list, gpu_source=source, runtimes=(settings.runtime,), at_ms=now_ms())
    log.info("node %s: %d GPU(s) from %s", settings.node, len(gpu_list), source)
    runtime = make_runtime(settings)
    records = WorkerRecords(settings.state_dir / "workers")
    snapshots = _snapshot_client(settings, runtime, nc, js, r)
    async with aiohttp.ClientSession() as http:
        vram = VramWatch(NvmlMeter() if source == "nvml" else MockMeter(), r)
        lifecycle = Lifecycle(settings.node, js, PodStates(r, js), Functions(r), runtime, records, http,
                              settings.state_dir / "logs", settings.stop_grace_s, snapshots, vram,
                              StartFailureLog(r))
        await reconcile(settings.node, lifecycle, records, runtime, Pods(r), Functions(r))
        logs = LogReader(settings.node, settings.state_dir / "logs", _worker_pid(lifecycle, runtime),
                         containers=runtime.name == "container")
        logs_sub = await nc.subscribe(subjects.logs_read(settings.node), cb=logs.on_request)
        report = _CapacityReport(js, capacity)
        await report.publish()

        async def on_placement(msg: PlacementMessage, subject: str) -> None:
            if isinstance(msg, PodAssigned):
                await lifecycle.start(msg)
            else:
                await lifecycle.stop_if_confirmed(msg.pod, msg.reason)

        # A union of Structs: msgspec decodes it, but `type[T]` cannot name a union.
        subscribe(broker, streams.agent_placements(settings.node), PlacementMessage, on_placement,  # type: ignore[arg-type]
                  creds=creds)
        await broker.start()
        loops = [asyncio.create_task(_heartbeats(nc, settings, lifecycle, report)),
                 asyncio.create_task(_watch(settings, lifecycle))]
        if snapshots is not None:
            loops.append(asyncio.create_task(_watch_snapshotter(settings, snapshots, report)))
        try:
            await stop.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            async def stop_workers() -> None:
                if settings.stop_workers_on_exit:
                    await lifecycle.stop_all("agent shut down")
            await run_steps(("stop consumers", lambda: subscriber.stop_consumers(broker)),
                            ("stop answering log reads", logs_sub.unsubscribe),
                            ("stop workers", stop_workers),
                            ("close the runtime", lifecycle.close),
                            ("close NATS", lambda: subscriber.close(broker, nc)),
                            ("close Redis", r.aclose))


def _worker_pid(lifecycle: Lifecycle, runtime):
    """pod -> the pid of its running worker's own process (its stdout is its log), or None."""
    def pid_of(pod: str) -> int | None:
        worker = lifecycle.workers.get(pod)
        return runtime.main_pid(worker.handle) if worker is not None else None
    return pid_of


def _snapshot_client(settings: AgentSettings, runtime, nc, js, r) -> SnapshotClient | None:
    """Snapshots need workers a restored copy cannot collide with: containers (a namespace set
    per copy), or processes in their own PID namespace (what CRIU restores side by side)."""
    isolated = runtime.name == "container" or getattr(runtime, "pid_namespace", False)
    if not settings.request_snapshots or not isolated:
        log.info("node %s: no snapshots (runtime %s%s)", settings.node, runtime.name,
                 "" if settings.request_snapshots else ", request_snapshots = false")
        return None
    return SnapshotClient(settings.node, nc, js, r, settings.restore_timeout_s, runtime.name)


class _CapacityReport:
    """This node's NodeCapacity as last published; the heartbeat and snapshotter loops change it."""

    def __init__(self, js, capacity: NodeCapacity):
        self._js, self.capacity = js, capacity
        self.published_s = 0.0  # loop time of the last publish that went through; 0: publish again

    async def publish(self) -> None:
        self.capacity = msgspec.structs.replace(self.capacity, at_ms=now_ms())
        self.published_s = 0.0
        await bus.publish(self._js, subjects.node_capacity(self.capacity.node), self.capacity,
                          msg_id=f"cap:{self.capacity.node}:{self.capacity.at_ms}")
        self.published_s = asyncio.get_running_loop().time()

    async def change(self, **fields) -> None:
        """Publish at once when `fields` change the report (placement and the API should know
        now, not at the next periodic report); a failed publish is retried by the heartbeats."""
        changed = msgspec.structs.replace(self.capacity, **fields)
        if changed == self.capacity:
            return
        self.capacity = changed
        with contextlib.suppress(Exception):
            await self.publish()


async def _heartbeats(nc, settings: AgentSettings, lifecycle: Lifecycle, report: _CapacityReport) -> None:
    while True:
        hb = NodeHeartbeat(node=settings.node, at_ms=now_ms(), pods=lifecycle.reported())
        await bus.publish_core(nc, subjects.node_heartbeat(settings.node), hb)
        if asyncio.get_running_loop().time() - report.published_s > settings.capacity_every_s:
            with contextlib.suppress(Exception):
                await report.publish()
        await asyncio.sleep(settings.heartbeat_s)


async def _watch_snapshotter(settings: AgentSettings, snapshots: SnapshotClient, report: _CapacityReport) -> None:
    """Ping this node's snapshotter every heartbeat: the node offers what it answers, nothing
    once it is down, and is degraded while down if a snapshotter is expected here."""
    loop = asyncio.get_running_loop()
    live = SnapshotterLiveness(subjects.snapshot_ping(settings.node), settings.snapshotter_down_after,
                               settings.expect_snapshotter, loop.time())
    while True:
        sent = loop.time()
        try:
            pong = await snapshots.ping(settings.snapshotter_ping_timeout_s)
            change, why = live.answered(pong.capabilities, pong.started_ms, loop.time()), ""
        except SnapshotterSilent as exc:
            change, why = live.missed(loop.time()), exc.reason
        _log_change(settings, live, change, why)
        snapshots.mark(live.reason if live.down else "")
        if live.snapshot_support != report.capacity.snapshot_support:
            log.info("node %s snapshot support: %s", settings.node, ", ".join(live.snapshot_support) or "none")
        await report.change(snapshot_support=live.snapshot_support, degraded=live.degraded)
        # One ping per heartbeat; one that timed out is followed at once.
        await asyncio.sleep(max(0.0, settings.heartbeat_s - (loop.time() - sent)))


def _log_change(settings: AgentSettings, live: SnapshotterLiveness, change: Change | None, why: str) -> None:
    if change is Change.DOWN and live.expected:
        log.warning("node %s degraded: %s (last ping: %s)", settings.node, live.reason, why)
    elif change is Change.BACK and live.expected:
        log.info("node %s healthy again: its snapshotter answers on %s", settings.node, live.subject)
    elif change is Change.RESTARTED:
        log.info("node %s: its snapshotter restarted (started_ms %d)", settings.node, live.started_ms)


async def _watch(settings: AgentSettings, lifecycle: Lifecycle) -> None:
    while True:
        try:
            await lifecycle.check_workers()
        except Exception:
            log.exception("worker check failed; retrying")
        await asyncio.sleep(settings.health_every_s)
