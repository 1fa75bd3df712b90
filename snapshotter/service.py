"""The snapshotter process of one node: CRIU dumps and restores, over the bus and Redis only.

- consumes `snapshot.requested.>` (durable consumer `snapshotter-<node>`, acting on requests
  for its node) and publishes `snapshot.ready.<fn>` (see dumps.py);
- answers core request/reply `snapshot.restore.<node>` (see restores.py), and
  `snapshot.ping.<node>` from its event loop with its capabilities (the agent's liveness check);
- at start-up, stops restored workers a predecessor left unowned (see orphans.py);
- with `runtime = "container"`, checkpoints and restores the agent's containers through the
  podman API (containers.py, container_restores.py) and keeps staged standbys (standby.py);
- detects at start-up whether GPU memory can be checkpointed here (gpu_support.py); where it
  can, process workers holding GPUs are dumped and restored with their device memory
  (cuda_state.py; not proven on a device);
- keeps `redis_keys.snapshotter(node)` alive (TTL `presence_ttl_s`) while it runs, so
  placement offers this node's snapshots only while something here can restore them; the
  agent reports the capabilities its pings hear back (`criu`, plus `container`, plus
  `cuda-checkpoint`) in NodeCapacity.snapshot_support.
One CRIU operation runs at a time per node (a lock shared by dumps and restores).
"""

import asyncio
import logging

import msgspec
from nats.js.api import DeliverPolicy

from bus_schemas import permissions, streams, subjects
from bus_schemas.codec import DecodeError, decode, encode
from bus_schemas.snapshots import SnapshotPong, SnapshotRequested, SnapshotRestore, SnapshotRestored
from thaw_core import bus_auth, subscriber, telemetry
from thaw_core.clock import now_ms
from thaw_core.store import acl
from thaw_core.store.client import connect_redis_as
from thaw_core.store.pods import Pods
from thaw_core.store.snapshots import announce_snapshotter, withdraw_snapshotter
from thaw_core.podman.checkpoints import PodmanCheckpoints
from thaw_core.podman.client import Podman
from thaw_core.subscriber import subscribe
from thaw_core.sandbox import network
from thaw_core.shutdown import run_steps

from snapshotter import gpu_support, lazy_pages, sandboxed
from snapshotter.container_restores import ContainerRestores
from snapshotter.criu import find_criu
from snapshotter.cuda_state import CudaCheckpoint
from snapshotter.dumps import Dumps
from snapshotter.orphans import stop_orphans
from snapshotter.restores import Restores
from snapshotter.manifest import HostFacts
from snapshotter.settings import SnapshotterSettings
from snapshotter.standby import StandbyPool

log = logging.getLogger(__name__)
QUEUE_GROUP = "snapshotter"  # two snapshotters on one node share its restores


async def run_snapshotter(settings: SnapshotterSettings, stop: asyncio.Event) -> None:
    criu = await find_criu(settings.criu_path)  # CriuMissing says how to install one
    log.info("node %s: CRIU %s at %s; tiers %s", settings.node, criu.version, criu.path,
             ", ".join(f"{t.name}={t.root}" for t in settings.store().tiers))
    r = connect_redis_as(settings.redis_url, acl.SNAPSHOTTER, settings.redis_creds)
    creds = bus_auth.for_service(settings.nats_creds, permissions.SNAPSHOTTER, settings.node)
    broker, nc = await subscriber.connect(settings.nats_url, f"snapshotter-{settings.node}", creds)
    js = nc.jetstream()
    await bus_auth.streams_ready(js, creds)
    sandboxed.sweep_criu_scratch()
    lazy_pages.sweep(settings.work_dir)
    if parked := await network.remove_parked(settings.network()):
        log.warning("removed %d pod network link(s) parked by a snapshotter that died mid-dump", parked)
    if killed := await stop_orphans(settings.node, Pods(r)):
        log.warning("stopped %d restored worker(s) left by a snapshotter that died mid-restore", killed)
    gpu = gpu_support.detect(settings.cuda_checkpoint_path)
    log.info("node %s: GPU checkpoint %s (%s)", settings.node, "supported" if gpu.supported else "not supported",
             gpu.reason)
    cuda = CudaCheckpoint(gpu.cuda_checkpoint) if gpu.supported else None
    lock = asyncio.Lock()
    containers = await _containers(settings, criu.version, lock)
    dumps = Dumps(settings, criu, js, r, lock, containers, cuda)
    restores = Restores(settings, criu, r, lock, containers, cuda)
    # NEW: a node's first snapshotter does not replay a week of other pods' requests.
    subscribe(broker, streams.snapshotter_requests(settings.node), SnapshotRequested, dumps.on_requested,
              deliver_policy=DeliverPolicy.NEW, creds=creds)
    await broker.start()
    tasks: set[asyncio.Task] = set()

    async def on_restore(msg) -> None:
        task = asyncio.create_task(_answer(restores, msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    capabilities = settings.capabilities(gpu.capability())
    sub = await nc.subscribe(subjects.snapshot_restore(settings.node), queue=QUEUE_GROUP, cb=on_restore)
    pings = await nc.subscribe(subjects.snapshot_ping(settings.node), queue=QUEUE_GROUP,
                               cb=_pong(SnapshotPong(node=settings.node, capabilities=capabilities,
                                                     started_ms=now_ms())))
    presence = asyncio.create_task(_stay_present(r, settings, capabilities))
    try:
        await stop.wait()
    finally:
        presence.cancel()
        await asyncio.gather(presence, return_exceptions=True)
        await run_steps(("withdraw presence", lambda: withdraw_snapshotter(r, settings.node)),
                        ("unsubscribe from restore requests", sub.unsubscribe),
                        ("unsubscribe from pings", pings.unsubscribe),
                        ("finish snapshot tasks", lambda: asyncio.gather(*tasks, return_exceptions=True)),
                        ("stop watching lazy restores", restores.close),
                        ("close podman", containers.close if containers is not None else lambda: None),
                        ("stop consumers", lambda: subscriber.stop_consumers(broker)),
                        ("close NATS", lambda: subscriber.close(broker, nc)), ("close Redis", r.aclose))


async def _containers(settings: SnapshotterSettings, criu_version: str,
                      lock: asyncio.Lock) -> ContainerRestores | None:
    """The container side, on a node whose agent runs containers; PodmanUnavailable says how
    to install podman when it is missing."""
    if settings.runtime != "container":
        return None
    client = Podman(settings.podman_socket)
    await client.docker()  # starts the service now, or says at startup how to install podman
    podman = PodmanCheckpoints(client)
    return ContainerRestores(podman, settings.store(), HostFacts.local(criu_version), settings.cache_dir,
                             StandbyPool(podman, settings.standby_per_snapshot), lock)


async def _answer(restores: Restores, msg) -> None:
    token = telemetry.attach(msg.headers)
    try:
        try:
            ask = decode(msg.data, SnapshotRestore)
            with telemetry.span("restore", **{"thaw.pod": ask.pod, "thaw.snapshot": ask.snapshot}) as current:
                reply = await restores.restore(ask)
                current.set_attribute("thaw.restored", reply.ok)
        except DecodeError as exc:
            reply = SnapshotRestored(ok=False, error=f"bad restore request: {exc}")
        except Exception as exc:  # the agent must hear back, whatever broke
            log.exception("restore failed unexpectedly")
            reply = SnapshotRestored(ok=False, error=f"snapshotter error: {exc!r}")
        await msg.respond(encode(reply))
    finally:
        telemetry.detach(token)


def _pong(pong: SnapshotPong):
    """Answer each ping at once, from this loop: a loop that stops turning stops answering,
    which is what the agent's liveness check is for (no thread may answer on its behalf)."""
    async def on_ping(msg) -> None:
        await msg.respond(encode(msgspec.structs.replace(pong, at_ms=now_ms())))
    return on_ping


async def _stay_present(r, settings: SnapshotterSettings, capabilities: tuple[str, ...]) -> None:
    while True:
        try:
            await announce_snapshotter(r, settings.node, capabilities, settings.presence_ttl_s)
        except Exception:
            log.warning("could not refresh presence in Redis; retrying")
        await asyncio.sleep(settings.presence_ttl_s / 3)
