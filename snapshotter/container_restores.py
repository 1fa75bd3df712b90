"""Restore a container snapshot as a pod's worker container ``thaw-<pod>``.

Fast path: a staged standby of the snapshot on this node (see standby.py) is renamed and
restored in place. Otherwise the nearest verified copy is materialized (fetch, checksum,
unpack; cached per node) and imported by podman as a new container on a free host port.
After either, standbys are refilled in the background, after `refill_delay_s` so that the
staging work does not compete with the restored worker's first requests.

Raises SnapshotUnusable subclasses (incompatible, missing, corrupt, podman refused); the
caller drops missing/corrupt snapshots and the agent cold-starts the pod.
"""

import asyncio
import logging

from thaw_core.podman.checkpoints import PodmanCheckpointError, PodmanCheckpoints, Restored
from thaw_core.podman.names import container_name
from thaw_core.ports import free_port

from snapshotter.containers import CHECKPOINT_FILE
from snapshotter.errors import RestoreFailed, SnapshotIncompatible
from snapshotter.manifest import HostFacts, Manifest, incompatibility
from snapshotter.materialize import materialize
from snapshotter.standby import StandbyPool
from snapshotter.store import TieredStore

log = logging.getLogger(__name__)


class ContainerRestores:
    def __init__(self, podman: PodmanCheckpoints, store: TieredStore, host: HostFacts, cache_dir,
                 standby: StandbyPool, lock: asyncio.Lock, refill_delay_s: float = 3.0):
        self.podman, self.store, self.host, self.cache_dir = podman, store, host, cache_dir
        self.standby, self._lock, self._delay = standby, lock, refill_delay_s
        self._tasks: set[asyncio.Task] = set()

    async def restore(self, pod: str, m: Manifest) -> tuple[Restored, str]:
        """(the running container, "standby" or "import"). Call with the node's CRIU lock held."""
        reason = incompatibility(m, self.host, "container")
        if reason:
            raise SnapshotIncompatible("restore snapshot", reason, snapshot=m.id)
        name = container_name(pod)
        await self.podman.remove(name)  # a leftover of an earlier attempt for this pod
        restored = await self.standby.take(m.id, name)
        how = "standby"
        if restored is None:
            how = "import"
            image = await materialize(self.store, self.host, "container", m, self.cache_dir)
            try:
                restored = await self.podman.restore_import(image / CHECKPOINT_FILE, name=name,
                                                            host_port=free_port(), container_port=m.port)
            except PodmanCheckpointError as exc:
                await self.podman.remove(name)
                raise RestoreFailed("podman restore", str(exc), snapshot=m.id) from None
        self.refill_later(m)
        return restored, how

    async def prepare(self, m: Manifest) -> int:
        """Materialize `m` and stage its standbys now (after a dump, or from a benchmark).
        Call with the node's CRIU lock held. Returns how many standbys were made."""
        if self.standby.per_snapshot <= 0:
            return 0
        image = await materialize(self.store, self.host, "container", m, self.cache_dir)
        return await self.standby.fill(m.id, image / CHECKPOINT_FILE, m.port)

    def refill_later(self, m: Manifest) -> None:
        task = asyncio.create_task(self._refill(m))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refill(self, m: Manifest) -> None:
        await asyncio.sleep(self._delay)
        try:
            async with self._lock:
                made = await self.prepare(m)
            if made:
                log.info("staged %d standby container(s) of %s", made, m.id)
        except Exception as exc:  # a missing standby costs only the import path next time
            log.warning("could not stage standbys of %s: %s", m.id, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.podman.close()
