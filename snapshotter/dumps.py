"""Handle `snapshot.requested.<fn>`: checkpoint a warm worker of this node and announce it.

A process worker (runtime_ref "pid:starttime") is dumped with CRIU (capture.py), its GPU
memory with it when the pod holds GPUs and this node has cuda-checkpoint (cuda_state.py); a container
worker (runtime_ref a container id, on a snapshotter configured for the container runtime) is
checkpointed through podman (containers.py), and standbys of the new snapshot are staged right
away so the first restore on this node skips podman's import.

Idempotent: a request for a pod that is gone, no longer serving, not on this node, or whose
function already has a usable snapshot of the same spec changes nothing, so a redelivered or
repeated request never dumps twice. A dump that fails is logged and recorded on the function
(`SnapshotIndex.record_failure`) and not retried: the next cold-started pod asks again.
"""

import asyncio
import logging
from typing import Any
from urllib.parse import urlparse

from nats.js import JetStreamContext
from redis.asyncio import Redis

from bus_schemas import subjects
from bus_schemas.pods import SERVING
from bus_schemas.snapshots import SnapshotReady, SnapshotRequested
from thaw_core import bus
from thaw_core import process_refs
from thaw_core.clock import now_ms
from thaw_core.store.pods import Pods
from thaw_core.store.snapshots import SnapshotCatalog, SnapshotIndex

from snapshotter.capture import capture_process
from snapshotter.container_restores import ContainerRestores
from snapshotter.containers import capture_container
from snapshotter.criu import Criu
from snapshotter.cuda_state import CudaCheckpoint
from snapshotter.errors import SnapshotError
from snapshotter.materialize import evict
from snapshotter.settings import SnapshotterSettings

log = logging.getLogger(__name__)


class Dumps:
    def __init__(self, settings: SnapshotterSettings, criu: Criu, js: JetStreamContext, r: Redis,
                 lock: asyncio.Lock, containers: ContainerRestores | None = None,
                 cuda: CudaCheckpoint | None = None):
        self.s, self.criu, self._js, self._r = settings, criu, js, r
        self.store, self.index = settings.store(), SnapshotIndex(r)
        self.pods, self.catalog = Pods(r), SnapshotCatalog(r)
        self._lock = lock  # one dump at a time on a node (restores do not wait for it)
        self.containers = containers  # None: process workers only
        self.cuda = cuda  # None: this node cannot checkpoint GPU memory (gpu_support.detect)

    async def on_requested(self, msg: SnapshotRequested, subject: str) -> None:
        if msg.node != self.s.node:
            return
        target = await self._target(msg)
        if target is None:
            return
        runtime = "container" if isinstance(target, str) else "process"
        async with self._lock:
            if await self.catalog.usable(msg.fn, msg.spec_digest, self.s.node, runtime) is not None:
                return  # another pod's request got there first
            started = asyncio.get_running_loop().time()
            try:
                m, tiers = await self._capture(msg, target)
            except (SnapshotError, OSError) as exc:
                log.warning("snapshot of pod %s (%s) failed: %s", msg.pod, msg.fn, exc)
                await self.index.record_failure(msg.fn, str(exc), now_ms())
                return
            took = asyncio.get_running_loop().time() - started
            if runtime == "container":
                await self._stage(m)
        await self._evict_deleted()
        log.info("snapshot %s of %s: %d bytes in %s, %.2fs", m.id, msg.fn, m.size_bytes, ",".join(tiers), took)
        ready = SnapshotReady(fn=m.fn, snapshot=m.id, node=m.node, size_bytes=m.size_bytes, tiers=tiers,
                              sha256=m.sha256, at_ms=now_ms(), pod=msg.pod, dump_s=round(took, 3))
        await bus.publish(self._js, subjects.snapshot_ready(m.fn), ready, msg_id=f"snapready:{m.id}")

    async def _stage(self, m) -> None:
        try:
            made = await self.containers.prepare(m)
            log.info("staged %d standby container(s) of %s", made, m.id)
        except Exception as exc:  # the snapshot is good; restores here just import it
            log.warning("could not stage standbys of %s: %s", m.id, exc)

    async def _capture(self, msg: SnapshotRequested, target: str | tuple[int, int, tuple[int, ...]]):
        def progress(line: str) -> None:
            log.info("snapshot of %s: %s", msg.pod, line)

        common: dict[str, Any] = dict(fn=msg.fn, node=self.s.node, work_dir=self.s.work_dir, policy=self.s.retention,
                      spec_digest=msg.spec_digest, progress=progress)
        if isinstance(target, str):
            return await capture_container(self.containers.podman, self.store, self.index, container=target,
                                           criu_version=self.criu.version, **common)
        pid, port, gpus = target
        cuda = self.cuda if gpus else None  # a worker given no GPU has no device memory to move
        if gpus and cuda is None:
            log.info("snapshot of %s: the pod holds GPU(s) %s but this node has no cuda-checkpoint; "
                     "dumping without GPU state", msg.pod, ",".join(map(str, gpus)))
        return await capture_process(self.criu, self.store, self.index, pid=pid, port=port,
                                     cuda=cuda, gpus=gpus, net=self.s.network(), **common)

    async def _target(self, msg: SnapshotRequested) -> str | tuple[int, int, tuple[int, ...]] | None:
        """The pod's worker if it is ours to dump now: a container id, or (pid, port, GPU
        indices) of a process (the pid is the host-side one, from runtime_ref); else None
        (logged). The GPUs come from the pod record: what the agent put in CUDA_VISIBLE_DEVICES."""
        record = await self.pods.get(msg.pod)
        if record is None or record.node != self.s.node or record.fn != msg.fn:
            log.info("snapshot request for %s: pod not found on %s; skipped", msg.pod, self.s.node)
            return None
        if record.state not in SERVING:
            log.info("snapshot request for %s: pod is %s, not serving; skipped", msg.pod, record.state.value)
            return None
        if self.containers is not None and _is_container_id(record.runtime_ref):
            return record.runtime_ref
        try:
            pid, start = process_refs.parse_ref(record.runtime_ref)
        except ValueError:
            log.info("snapshot request for %s: %r is not a process worker; skipped", msg.pod, record.runtime_ref)
            return None
        if process_refs.start_time(pid) != start:
            log.info("snapshot request for %s: worker %s is gone; skipped", msg.pod, record.runtime_ref)
            return None
        port = urlparse(record.endpoint).port
        if not port:
            log.info("snapshot request for %s: no port in endpoint %r; skipped", msg.pod, record.endpoint)
            return None
        return pid, port, record.gpus

    async def _evict_deleted(self) -> None:
        """Unpacked images and standbys of snapshots that retention deleted are dead weight."""
        if self.s.cache_dir.exists():
            for entry in self.s.cache_dir.iterdir():
                if not entry.name.startswith(".") and await self.index.get(entry.name) is None:
                    evict(self.s.cache_dir, entry.name)
        if self.containers is not None:
            known = {s.id for fn in await self.index.functions()
                     for s in await self.index.for_function(fn)}
            await self.containers.standby.drop(known)


def _is_container_id(ref: str) -> bool:
    return len(ref) == 64 and all(c in "0123456789abcdef" for c in ref)
