"""Staged (standby) containers: a container snapshot imported ahead of time, ready to restore.

Restoring a container checkpoint through podman's import costs ~0.3 s of unpacking and
container creation before runc and CRIU even start. A node that restored a snapshot once will
likely restore it again, so after each restore (and right after a dump) the snapshotter stages
`per_snapshot` stopped containers named ``thaw-standby-<snapshot>-<n>`` that already hold the
checkpoint; the next restore renames one to ``thaw-<pod>`` and restores it in place.

A staged container holds no memory (it is stopped) and has its host port chosen when staged,
so a restore from it answers on that port. State lives in podman only (names), so a restarted
snapshotter finds the standbys its predecessor made. If taking one fails (its port taken since,
podman lost it), the caller removes it and restores by import instead: slower, same result.
"""

import logging
from pathlib import Path

from thaw_core.podman.checkpoints import Listed, PodmanCheckpoints, Restored
from thaw_core.podman.names import STANDBY_PREFIX, standby_name
from thaw_core.ports import free_port

log = logging.getLogger(__name__)


class StandbyPool:
    def __init__(self, podman: PodmanCheckpoints, per_snapshot: int = 1):
        self.podman, self.per_snapshot = podman, per_snapshot

    async def staged(self, snapshot_id: str) -> list[Listed]:
        """Stopped standbys of `snapshot_id`, in slot order."""
        prefix = f"{STANDBY_PREFIX}{snapshot_id}-"
        found = await self.podman.listed(prefix)
        return sorted((c for c in found if not c.running and c.name[len(prefix):].isdigit()),
                      key=lambda c: c.name)

    async def take(self, snapshot_id: str, name: str) -> Restored | None:
        """Restore a standby of `snapshot_id` as container `name`; None when there is none (or
        it failed: then it is removed and the reason logged), so the caller imports instead."""
        for staged in await self.staged(snapshot_id):
            try:
                return await self.podman.restore_staged(staged, name=name)
            except Exception as exc:  # any failure of a standby costs only the import path
                log.warning("standby %s of %s unusable (%s); removing it", staged.name, snapshot_id, exc)
                await self.podman.remove(staged.id)
        return None

    async def fill(self, snapshot_id: str, archive: Path, container_port: int) -> int:
        """Stage standbys of `snapshot_id` from the unpacked checkpoint `archive` until there
        are `per_snapshot`; returns how many were made. Failures are logged, not raised."""
        have = {c.name for c in await self.staged(snapshot_id)}
        made = 0
        for slot in range(self.per_snapshot):
            name = standby_name(snapshot_id, slot)
            if name in have:
                continue
            await self.podman.remove(name)  # a running or half-made leftover of this name
            try:
                await self.podman.stage(archive, name=name, host_port=free_port(),
                                        container_port=container_port)
                made += 1
            except Exception as exc:
                log.warning("could not stage %s: %s", name, exc)
        return made

    async def drop(self, keep: set[str]) -> int:
        """Remove standbys of snapshots not in `keep` (deleted by retention). Returns how many."""
        dropped = 0
        for c in await self.podman.listed(STANDBY_PREFIX):
            sid = c.name[len(STANDBY_PREFIX):].rsplit("-", 1)[0]
            if sid not in keep:
                await self.podman.remove(c.id)
                dropped += 1
        return dropped
