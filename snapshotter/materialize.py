"""Make a snapshot restorable on this node: check it fits, fetch the nearest good copy, unpack.

Unpacked images are cached per snapshot id under `cache_dir` and marked verified only after a
complete, checksum-checked unpack, so the second restore of a snapshot on a node skips fetch,
checksum and decompression and goes straight to CRIU or podman. The cache is node-private;
the archive in the tiers stays the only shared artefact.
"""

import asyncio
import os
import shutil
from pathlib import Path

from snapshotter.errors import SnapshotIncompatible
from snapshotter.manifest import HostFacts, Manifest, incompatibility
from snapshotter.store import Progress, TieredStore, _quiet

VERIFIED = ".verified"


async def materialize(store: TieredStore, host: HostFacts, runtime: str, m: Manifest,
                      cache_dir: Path, progress: Progress = _quiet) -> Path:
    """Return a local directory holding `m`'s verified image.

    `m` is the manifest from the index (its sha256 is the reference checksum). Raises
    SnapshotIncompatible, SnapshotMissing or SnapshotCorrupt — all SnapshotUnusable, on which
    the caller cold-starts the pod.
    """
    reason = incompatibility(m, host, runtime)
    if reason:
        raise SnapshotIncompatible("restore snapshot", reason, snapshot=m.id)
    final = cache_dir / m.id
    if (final / VERIFIED).exists():
        return final
    # Unpack beside the final name, then rename: two restores racing on one node both succeed
    # and neither sees a half-unpacked directory.
    staging = cache_dir / f".{m.id}.{os.getpid()}.{id(asyncio.current_task())}"
    shutil.rmtree(staging, ignore_errors=True)
    tier = await asyncio.to_thread(store.fetch, m.fn, m.id, m.sha256, staging, progress)
    (staging / VERIFIED).write_text(tier)
    try:
        os.rename(staging, final)
    except OSError:  # another restore got there first; its copy is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return final


def evict(cache_dir: Path, snapshot_id: str) -> None:
    """Drop the cached unpacked image (after retention deleted the snapshot). Idempotent."""
    shutil.rmtree(cache_dir / snapshot_id, ignore_errors=True)
