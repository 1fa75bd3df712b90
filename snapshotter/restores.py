"""Answer `snapshot.restore.<node>`: restore a snapshot as a pod's worker, or say why not.

Every failure is an answer with `ok = false` and a reason (the agent then cold-starts the pod
and records the reason in its events); nothing here leaves a half-restored worker running.
Contract of a successful answer: the worker runs and answers on `endpoint`.

- process snapshots of a sandboxed worker (thaw_core/sandbox, snapshotter/sandboxed.py):
  `runtime_ref` is "pid:starttime" of the init of a fresh sandbox, in the pod's cgroup (the
  agent made it), answering at an address of its own on the node's pod bridge: any number of
  copies of one snapshot run side by side, restored in parallel (at most `max_restores` CRIU
  runs at once, default one per core; a dump never holds one up), and concurrent restores of
  one snapshot share one fetched, checked and unpacked image;
- process snapshots of a plain worker (a node that cannot sandbox): the init of a fresh PID
  namespace, listening on the snapshot's port, which is the port of the worker it was taken
  from, so one copy at a time;
- container snapshots (container_restores.py): `runtime_ref` is the id of container
  ``thaw-<pod>``, with its own network namespace, published on a free host port.

So:

- for a plain process snapshot the port must be free: "snapshot port busy" otherwise (e.g. the
  original still serves); containers, with a network namespace per copy, have no such limit;
- a corrupt or vanished image is removed from the index (and the tiers), so the next pod does
  not try it again and the next warm pod asks for a fresh snapshot;
- a lazy restore (restore_modes.py, lazy_pages.py) answers as soon as CRIU has restored all
  but the memory pages; its daemon is watched until it exits, and one that dies before every
  page is in gets its worker killed, with the reason in the pod's events (the agent fails the
  pod with it) and this snapshot restored eagerly from then on;
- if the pod stopped restoring while CRIU ran (the agent gave up waiting, or placement stopped
  it), the restored worker is killed again;
- a process snapshot holding GPU memory (manifest `gpu`) is restored only on a node with
  cuda-checkpoint and only for a pod holding the same GPU indices (cuda-checkpoint does not
  move CUDA state between GPUs); after CRIU, the worker's CUDA state is toggled back onto the
  device before the answer, and a failed toggle kills the restored worker (cold start).
"""

import asyncio
import logging
import os
import time

from redis.asyncio import Redis

from bus_schemas.encodings import gpu_indices, gpu_list
from bus_schemas.pods import PodState
from bus_schemas.snapshots import SnapshotRestore, SnapshotRestored
from thaw_core import process_refs
from thaw_core.clock import now_ms
from thaw_core.sandbox import cgroups, network
from thaw_core.store import events
from thaw_core.store.pods import Pods
from thaw_core.store.snapshots import SnapshotIndex

from snapshotter import criu as criu_mod
from snapshotter import lazy_pages, procs, restore_modes, sandboxed
from snapshotter.container_restores import ContainerRestores
from snapshotter.criu import Criu
from snapshotter.cuda_state import CudaCheckpoint
from snapshotter.errors import (CudaCheckpointFailed, SnapshotCorrupt, SnapshotIncompatible,
                                SnapshotMissing, SnapshotUnusable)
from snapshotter.manifest import HostFacts, Manifest
from snapshotter.materialize import evict, materialize
from snapshotter.settings import SnapshotterSettings

log = logging.getLogger(__name__)


class Restores:
    def __init__(self, settings: SnapshotterSettings, criu: Criu, r: Redis, lock: asyncio.Lock,
                 containers: ContainerRestores | None = None, cuda: CudaCheckpoint | None = None):
        self.s, self.criu, self._r = settings, criu, r
        self.pods = Pods(r)
        self.store, self.index = settings.store(), SnapshotIndex(r)
        self.host = HostFacts.local(criu.version, gpu_checkpoint=cuda is not None)
        self.cuda = cuda  # None: GPU snapshots are incompatible here (materialize refuses them)
        self._lock = lock  # plain process images and containers: one at a time
        self._slots = asyncio.Semaphore(settings.max_restores or os.cpu_count() or 1)
        self._images: dict[str, asyncio.Future] = {}  # snapshot id -> its materialization in flight
        self.containers = containers  # None: this node restores process snapshots only
        self._lazy_failed: set[str] = set()  # snapshot ids whose lazy daemon died: eager from now on
        self._demand: dict[str, float] = {}  # snapshot id -> share of pages faulted on demand, last lazy restore
        self._watchers: set[asyncio.Task] = set()  # one per running lazy-pages daemon
        self._how: dict[str, str] = {}  # pod -> how its restore went, for the answer

    async def restore(self, req: SnapshotRestore) -> SnapshotRestored:
        started = time.monotonic()
        try:
            ref, endpoint = await self._restore(req)
        except SnapshotUnusable as exc:
            log.warning("restore of %s for pod %s refused: %s", req.snapshot, req.pod, exc)
            return SnapshotRestored(ok=False, error=str(exc).strip())
        finally:
            how = self._how.pop(req.pod, "eager")
        took = time.monotonic() - started
        log.info("restored %s as pod %s (%s, %s, %s) in %.3fs", req.snapshot, req.pod, ref, endpoint, how, took)
        return SnapshotRestored(ok=True, runtime_ref=ref, endpoint=endpoint, restore_s=round(took, 4), how=how)

    def demand(self, snapshot: str) -> float | None:
        """What `auto` learned of `snapshot`: the share of pages faulted in on demand."""
        return self._demand.get(snapshot)

    async def settled(self) -> None:
        """Wait until every lazy-pages daemon started so far has exited."""
        await asyncio.gather(*self._watchers, return_exceptions=True)

    async def close(self) -> None:
        """Stop watching lazy daemons (they run on: their workers still need them)."""
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)

    async def _restore(self, req: SnapshotRestore) -> tuple[str, str]:
        m = await self.index.get(req.snapshot)
        if m is None or m.fn != req.fn:
            raise SnapshotMissing("restore snapshot", f"not in the index for function {req.fn} "
                                  "(deleted by retention?)", snapshot=req.snapshot)
        if m.runtime == "container" and self.containers is not None:
            return await self._restore_container(req, m)
        pid, endpoint = await self._restore_process(req, m)
        ref = process_refs.ref_of(pid)
        if ref is None:
            raise SnapshotUnusable("restore snapshot", f"restored worker (pid {pid}) exited at once", snapshot=m.id)
        return ref, endpoint

    async def _restore_container(self, req: SnapshotRestore, m: Manifest) -> tuple[str, str]:
        async with self._lock:
            try:
                restored, how = await self.containers.restore(req.pod, m)
            except (SnapshotCorrupt, SnapshotMissing):
                await self._forget(m.fn, m.id)
                raise
        log.info("container %s of pod %s restored from %s (%s)", restored.id[:12], req.pod, m.id, how)
        state = await self._pod_state(req.pod)
        if state != PodState.RESTORING.value:
            await self.containers.podman.remove(restored.id)
            raise SnapshotUnusable("restore snapshot", f"pod {req.pod} is {state or 'gone'}, no longer restoring; "
                                   "the restored worker was stopped", snapshot=m.id)
        return restored.id, restored.endpoint

    async def _restore_process(self, req: SnapshotRestore, m: Manifest) -> tuple[int, str]:
        if m.gpu:
            await self._check_gpus(req, m)
        if m.sandboxed:
            pid, endpoint = await self._restore_sandboxed(req, m)
        else:
            pid, endpoint = await self._restore_plain(req, m)
        state = await self._pod_state(req.pod)
        if state != PodState.RESTORING.value:
            procs.kill(pid)
            raise SnapshotUnusable("restore snapshot", f"pod {req.pod} is {state or 'gone'}, no longer restoring; "
                                   "the restored worker was stopped", snapshot=m.id)
        return pid, endpoint

    async def _restore_plain(self, req: SnapshotRestore, m: Manifest) -> tuple[int, str]:
        async with self._lock:  # one restore at a time: the port check and the bind stay together
            if procs.port_in_use(m.port):
                raise SnapshotUnusable("restore snapshot", f"snapshot port busy: 127.0.0.1:{m.port} is in use "
                                       "(the worker it was taken from may still run)", snapshot=m.id)
            image = await self._image(m)
            restored, daemon = await self._criu_restore(req, m, image, sandboxed=False)
            try:
                if m.gpu:
                    await self._resume_gpu(restored.pid, m)
            except BaseException:
                self._stop_daemon(daemon)
                raise
        self._watch(daemon, restored.pid, req, m)
        return restored.pid, f"http://127.0.0.1:{m.port}"

    async def _restore_sandboxed(self, req: SnapshotRestore, m: Manifest) -> tuple[int, str]:
        dirs = cgroups.pod_dirs(self.s.node, req.pod) if cgroups.version() else ()
        if dirs and not dirs[0].is_dir():
            raise SnapshotUnusable("restore snapshot", f"pod {req.pod} has no cgroup on this node (the agent "
                                   "makes it before asking for a restore)", snapshot=m.id)
        missing = sandboxed.missing_mounts(m.mounts)
        if missing:
            raise SnapshotIncompatible("restore snapshot", f"the image needs {', '.join(missing)} from the host, "
                                       "and this node has none", snapshot=m.id)
        image = await self._image(m)
        net = await asyncio.to_thread(self.s.network)
        wrapper, options = sandboxed.restore_command(m.mounts, cgroups.join_script(dirs), net.tag)
        async with self._slots:
            restored, daemon = await self._criu_restore(req, m, image, sandboxed=True, extra=options,
                                                        wrapper=wrapper)
        try:
            if m.gpu:
                await self._resume_gpu(restored.pid, m)
            address = await network.attach(net, restored.pid)
        except network.NetworkError as exc:
            procs.kill(restored.pid)
            self._stop_daemon(daemon)
            raise SnapshotUnusable("restore snapshot", f"restored worker got no address: {exc}", snapshot=m.id) from None
        except BaseException:
            procs.kill(restored.pid)
            self._stop_daemon(daemon)
            raise
        sandboxed.sweep_criu_scratch()
        self._watch(daemon, restored.pid, req, m)
        return restored.pid, f"http://{address}:{m.port}"

    async def _criu_restore(self, req: SnapshotRestore, m: Manifest, image, *, sandboxed: bool,
                            extra: tuple[str, ...] = (), wrapper: tuple[str, ...] = ()):
        """CRIU's restore of `image`, eager or lazy as `req.mode` and this node allow:
        (RestoreResult, the lazy-pages daemon or None)."""
        memory = restore_modes.memory_bytes(image)
        lazy, how = restore_modes.choose(req.mode, memory, lazy_pages.unavailable_reason(sandboxed),
                                         m.id in self._lazy_failed, self._demand.get(m.id), m.gpu)
        daemon = None
        if lazy:
            try:
                daemon = await lazy_pages.start(self.criu, image, self.s.work_dir)
                daemon.memory = memory
            except SnapshotUnusable as exc:
                log.warning("lazy restore of %s unavailable, restoring eagerly: %s", m.id, exc)
                how = f"eager (the lazy-pages daemon did not start: {exc.why})"
        self._how[req.pod] = how
        if daemon is None:
            return await criu_mod.restore(self.criu, image, extra=extra, wrapper=wrapper), None
        try:
            restored = await criu_mod.restore(self.criu, image, extra=(*extra, *daemon.restore_options()),
                                              wrapper=wrapper, work_dir=daemon.work_dir)
        except BaseException:
            daemon.stop()
            raise
        return restored, daemon

    def _watch(self, daemon: lazy_pages.LazyPages | None, pid: int, req: SnapshotRestore, m: Manifest) -> None:
        if daemon is None:
            return
        task = asyncio.create_task(self._watch_daemon(daemon, pid, req, m))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch_daemon(self, daemon: lazy_pages.LazyPages, pid: int, req: SnapshotRestore,
                            m: Manifest) -> None:
        """Until the daemon exits; one that fails takes its worker down, saying why first (the
        agent reads the pod's events when it finds the worker gone). One that succeeds says how
        much its worker faulted in itself, which `auto` learns from."""
        ref, faults = process_refs.ref_of(pid), procs.page_faults(pid)
        code = await daemon.wait()
        try:
            after = procs.page_faults(pid)
            if code == 0 and faults is not None and after is not None and process_refs.ref_of(pid) == ref:
                self._demand[m.id] = restore_modes.demand_share(after - faults, daemon.memory)
            if code != 0:  # the worker may have died of it already; it is stopped either way
                why = daemon.failure(code)
                self._lazy_failed.add(m.id)
                log.warning("pod %s: %s; stopping its worker (pid %d)", req.pod, why, pid)
                try:
                    await events.record(self._r, req.pod, events.WORKER_STOPPED, why, now_ms())
                finally:
                    if ref is not None and process_refs.ref_of(pid) == ref:
                        procs.kill(pid)
        finally:
            daemon.stop()

    @staticmethod
    def _stop_daemon(daemon: lazy_pages.LazyPages | None) -> None:
        if daemon is not None:
            daemon.stop()

    async def _image(self, m: Manifest):
        """The verified local image of `m`: one fetch, check and unpack serves every restore
        of it that asks meanwhile. A corrupt or vanished snapshot is forgotten everywhere."""
        pending = self._images.get(m.id)
        if pending is None:
            pending = asyncio.ensure_future(materialize(self.store, self.host, "process", m, self.s.cache_dir))
            self._images[m.id] = pending
            pending.add_done_callback(lambda _: self._images.pop(m.id, None))
        try:
            return await asyncio.shield(pending)
        except (SnapshotCorrupt, SnapshotMissing):
            await self._forget(m.fn, m.id)
            raise

    async def _check_gpus(self, req: SnapshotRestore, m: Manifest) -> None:
        """The restored worker resumes on the GPUs it was dumped on: the pod must hold those."""
        record = await self.pods.get(req.pod)
        held = record.gpus if record is not None else ()
        if held != gpu_indices(m.gpu_indices):
            raise SnapshotIncompatible("restore snapshot", f"image holds GPU memory of GPU(s) "
                                       f"{m.gpu_indices or 'none'}, pod holds {gpu_list(held) or 'none'}",
                                       snapshot=m.id)

    async def _pod_state(self, pod: str) -> str:
        """The pod's state now ("" once it is gone): a restore that took long may have been
        overtaken by a stop."""
        record = await self.pods.get(pod)
        return record.state.value if record is not None else ""

    async def _resume_gpu(self, pid: int, m: Manifest) -> None:
        """Toggle the restored worker's CUDA state back onto its GPU; on failure it is killed."""
        if self.cuda is None:  # materialize refused it already; kept for a direct caller
            procs.kill(pid)
            raise SnapshotIncompatible("restore snapshot", "image holds GPU memory and this node "
                                       "has no cuda-checkpoint", snapshot=m.id)
        try:
            await self.cuda.resume(pid)
        except CudaCheckpointFailed as exc:
            procs.kill(pid)
            raise SnapshotUnusable("restore snapshot", f"restored worker (pid {pid}) could not be moved back "
                                   f"onto its GPU, so it was stopped: {exc}", snapshot=m.id) from None

    async def _forget(self, fn: str, snapshot_id: str) -> None:
        """A snapshot no tier can give back is dropped everywhere; idempotent."""
        log.warning("dropping unusable snapshot %s of %s", snapshot_id, fn)
        await self.index.remove(fn, snapshot_id)
        await asyncio.to_thread(self.store.delete, fn, snapshot_id)
        evict(self.s.cache_dir, snapshot_id)

