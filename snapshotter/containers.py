"""Take a snapshot of a container worker: podman checkpoint export -> tiered store -> index.

The image directory holds one file, the checkpoint archive podman exported (CRIU images, the
container's config and its root-filesystem changes); `capture_image` packs, checksums and
indexes it like a process image. The manifest's `port` is the port *inside* the container,
which a restore publishes on a fresh host port.
"""

import platform
import re
import shutil
import time
from pathlib import Path

from thaw_core.podman.checkpoints import PodmanCheckpointError, PodmanCheckpoints, container_port
from thaw_core.store.snapshots import SnapshotIndex

from snapshotter.capture import capture_image, new_snapshot_id
from snapshotter.criu import tail_errors
from snapshotter.errors import SnapshotError
from snapshotter.manifest import Manifest
from snapshotter.retention import RetentionPolicy
from snapshotter.store import Progress, TieredStore, _quiet

CHECKPOINT_FILE = "checkpoint.tar"  # name of the export inside an unpacked container image


async def capture_container(podman: PodmanCheckpoints, store: TieredStore, index: SnapshotIndex, *,
                            fn: str, node: str, container: str, criu_version: str, work_dir: Path,
                            policy: RetentionPolicy, progress: Progress = _quiet,
                            spec_digest: str = "") -> tuple[Manifest, tuple[str, ...]]:
    """Checkpoint running `container` (left running) and capture it. Raises SnapshotError when
    podman refuses (its message included); the scratch directory is removed either way."""
    sid = new_snapshot_id(fn)
    image_dir = work_dir / f"dump-{sid}"
    try:
        try:
            cport = container_port(await podman.inspect(container))
            if not cport:
                raise SnapshotError("checkpoint container", f"{container} publishes no port to restore")
            progress(f"checkpointing container {container[:12]}")
            ckpt = await podman.checkpoint(container, image_dir / CHECKPOINT_FILE)
        except PodmanCheckpointError as exc:
            raise SnapshotError("checkpoint container", with_criu_log(str(exc))) from None
        progress(f"exported {ckpt.size_bytes / 2**20:.1f} MiB in {ckpt.duration_s:.2f}s")
        draft = Manifest(id=sid, fn=fn, node=node, runtime="container",
                         created_ms=int(time.time() * 1000), sha256="", size_bytes=0, raw_bytes=0,
                         arch=platform.machine(), kernel=platform.release(),
                         criu_version=criu_version, port=cport, spec_digest=spec_digest)
        return await capture_image(store, index, image_dir, draft, policy, progress)
    finally:
        shutil.rmtree(image_dir, ignore_errors=True)


def with_criu_log(message: str) -> str:
    """Podman's message for a failed checkpoint, which names only runc's exit status, with the
    error lines of CRIU's log in runc's work path (the reason: an in-flight connection, ...)."""
    work = re.search(r"--work-path (\S+)", message)
    errors = tail_errors(Path(work.group(1)) / "dump.log", lines=4) if work else ""
    return f"{message}; CRIU: {errors}" if errors else message
