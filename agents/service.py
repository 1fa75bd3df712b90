"""The node agent: GPU discovery, capacity and heartbeats, placement consumer, worker watch."""

import asyncio
import contextlib
import logging

import aiohttp
import msgspec

from bus_schemas import streams, subjects
from bus_schemas.nodes import NodeCapacity, NodeHeartbeat
from bus_schemas.pods import PlacementMessage, PodAssigned
from thaw_core import bus
from thaw_core.clock import now_ms
from thaw_core.store.client import connect_redis
from thaw_core.store.functions import Functions
from thaw_core.store.ledger import Ledger
from thaw_core.store.pods import Pods
from thaw_core.subscriber import make_broker, subscribe
from thaw_core.shutdown import run_steps

from agents import gpus
from agents.lifecycle import Lifecycle
from agents.reconcile import reconcile
from agents.records import WorkerRecords
from agents.runtime.process import ProcessRuntime
from agents.settings import AgentSettings
from agents.snapshots import SnapshotClient

log = logging.getLogger(__name__)


def make_runtime(settings: AgentSettings):
    if settings.runtime == "process":
        return ProcessRuntime(settings.state_dir / "logs", settings.node)
    if settings.runtime == "container":
        from agents.runtime.container import ContainerRuntime

        return ContainerRuntime.from_settings(settings)
    raise ValueError(f"unknown runtime {settings.runtime!r}: use 'process' or 'container'")


async def run_agent(settings: AgentSettings, stop: asyncio.Event) -> None:
    r = connect_redis(settings.redis_url)
    nc = await bus.connect(settings.nats_url, f"agent-{settings.node}")
    js = nc.jetstream()
    await bus.ensure_streams(js)
    gpu_list, source = gpus.discover(settings.mock_gpus, settings.force_mock_gpus)
    capacity = NodeCapacity(node=settings.node, cpu_milli=settings.cpu_milli, memory_mib=settings.memory_mib,
                            gpus=gpu_list, gpu_source=source, runtimes=(settings.runtime,), at_ms=now_ms())
    log.info("node %s: %d GPU(s) from %s", settings.node, len(gpu_list), source)
    runtime = make_runtime(settings)
    records = WorkerRecords(settings.state_dir / "workers")
    snapshots = _snapshot_client(settings, runtime, nc, js, r)
    async with aiohttp.ClientSession() as http:
        lifecycle = Lifecycle(settings.node, js, Pods(r), Ledger(r), runtime, records, http,
                              settings.state_dir / "logs", settings.stop_grace_s, snapshots)
        await reconcile(settings.node, lifecycle, records, runtime, Pods(r), Functions(r))
        await _publish_capacity(js, capacity)
        broker = make_broker(settings.nats_url, f"agent-{settings.node}")

        async def on_placement(msg: PlacementMessage, subject: str) -> None:
            if isinstance(msg, PodAssigned):
                await lifecycle.start(msg)
            else:
                await lifecycle.stop(msg.pod, msg.reason)

        subscribe(broker, streams.agent_placements(settings.node), PlacementMessage, on_placement)
        await broker.start()
        loops = [asyncio.create_task(_heartbeats(nc, js, settings, lifecycle, capacity, snapshots)),
                 asyncio.create_task(_watch(settings, lifecycle))]
        try:
            await stop.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            async def stop_workers() -> None:
                if settings.stop_workers_on_exit:
                    await lifecycle.stop_all("agent shut down")
            await run_steps(("stop consumers", broker.stop), ("stop workers", stop_workers),
                            ("close the runtime", lifecycle.close), ("close NATS", nc.close),
                            ("close Redis", r.aclose))


def _snapshot_client(settings: AgentSettings, runtime, nc, js, r) -> SnapshotClient | None:
    """Snapshots need workers a restored copy cannot collide with: containers (a namespace set
    per copy), or processes in their own PID namespace (what CRIU restores side by side)."""
    isolated = runtime.name == "container" or getattr(runtime, "pid_namespace", False)
    if not settings.request_snapshots or not isolated:
        log.info("node %s: no snapshots (runtime %s%s)", settings.node, runtime.name,
                 "" if settings.request_snapshots else ", request_snapshots = false")
        return None
    return SnapshotClient(settings.node, nc, js, r, settings.restore_timeout_s, runtime.name)


async def _publish_capacity(js, capacity: NodeCapacity) -> None:
    capacity = msgspec.structs.replace(capacity, at_ms=now_ms())
    await bus.publish(js, subjects.node_capacity(capacity.node), capacity,
                      msg_id=f"cap:{capacity.node}:{capacity.at_ms}")


async def _heartbeats(nc, js, settings: AgentSettings, lifecycle: Lifecycle, capacity: NodeCapacity,
                      snapshots: SnapshotClient | None) -> None:
    last_capacity = asyncio.get_running_loop().time()
    while True:
        hb = NodeHeartbeat(node=settings.node, at_ms=now_ms(), pods=tuple(sorted(lifecycle.workers)))
        await bus.publish_core(nc, subjects.node_heartbeat(settings.node), hb)
        support = await _snapshot_support(snapshots, capacity.snapshot_support)
        if support != capacity.snapshot_support:
            # The snapshotter came or went: say so now, not at the next periodic report.
            log.info("node %s snapshot support: %s", settings.node, ", ".join(support) or "none")
            capacity = msgspec.structs.replace(capacity, snapshot_support=support)
            last_capacity = 0.0
        if asyncio.get_running_loop().time() - last_capacity > settings.capacity_every_s:
            with contextlib.suppress(Exception):
                await _publish_capacity(js, capacity)
            last_capacity = asyncio.get_running_loop().time()
        await asyncio.sleep(settings.heartbeat_s)


async def _snapshot_support(snapshots: SnapshotClient | None, current: tuple[str, ...]) -> tuple[str, ...]:
    """What this node's live snapshotter offers (it refreshes a Redis key while it runs)."""
    if snapshots is None:
        return ()
    try:
        return await snapshots.capabilities()
    except Exception:  # Redis briefly away: keep reporting what we knew
        return current


async def _watch(settings: AgentSettings, lifecycle: Lifecycle) -> None:
    while True:
        try:
            await lifecycle.check_workers()
        except Exception:
            log.exception("worker check failed; retrying")
        await asyncio.sleep(settings.health_every_s)
