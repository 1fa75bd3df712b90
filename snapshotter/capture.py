"""Take a snapshot: image -> tiered store -> Redis index -> retention.

`capture_image` works on any image directory (a CRIU dump of a process, or a podman checkpoint
export placed in a directory); `capture_process` is the whole path for a local-process worker.
The result carries what `snapshot.ready.<fn>` announces.
"""

import asyncio
import platform
import shutil
import time
import uuid
from pathlib import Path

from bus_schemas.encodings import gpu_list
from thaw_core.sandbox import network as pod_network
from thaw_core.store.snapshots import SnapshotIndex

from snapshotter import criu as criu_mod
from snapshotter import sandboxed
from snapshotter.cuda_state import CudaCheckpoint
from snapshotter.errors import CudaCheckpointFailed
from snapshotter.manifest import Manifest
from snapshotter.retention import RetentionPolicy, expired
from snapshotter.store import Progress, TieredStore, _quiet


def new_snapshot_id(fn: str) -> str:
    """Sortable by time, unique without coordination: <fn>-<ms>-<random>."""
    return f"{fn}-{int(time.time() * 1000)}-{uuid.uuid4().hex[:6]}"


async def capture_image(store: TieredStore, index: SnapshotIndex, image_dir: Path, draft: Manifest,
                        policy: RetentionPolicy, progress: Progress = _quiet) -> tuple[Manifest, tuple[str, ...]]:
    """Store `image_dir` in every tier, index it, then delete what `policy` expires.

    Retention runs after the new snapshot is indexed, so a function never has zero snapshots
    because of it. Deletion removes files before the index entry would be wrong: index first
    (no new restore picks it), then tiers.
    """
    m, tiers = await asyncio.to_thread(store.put, image_dir, draft, progress)
    await index.add(m, tiers)
    existing = [(s.id, s.created_ms) for s in await index.for_function(m.fn)]
    for sid in expired(existing, policy, now_ms=int(time.time() * 1000)):
        progress(f"retention: deleting {sid}")
        await index.remove(m.fn, sid)
        await asyncio.to_thread(store.delete, m.fn, sid)
    return m, tiers


async def capture_process(criu: criu_mod.Criu, store: TieredStore, index: SnapshotIndex, *,
                          fn: str, node: str, pid: int, port: int, work_dir: Path,
                          policy: RetentionPolicy, progress: Progress = _quiet,
                          spec_digest: str = "", cuda: CudaCheckpoint | None = None,
                          gpus: tuple[int, ...] = (),
                          net: pod_network.PodNetwork | None = None) -> tuple[Manifest, tuple[str, ...]]:
    """Dump the running worker `pid` (left running) and capture the image. The dump directory
    under `work_dir` is removed afterwards, success or not. `spec_digest` is recorded so a
    restore is only offered to pods of the same function spec.

    With `cuda` (a GPU worker on a node with cuda-checkpoint; `gpus` are the pod's GPU
    indices), the worker's CUDA state is moved to host memory for the dump and back right after
    it, before the image is stored: the image holds device memory and the manifest says so.
    A failed toggle fails the snapshot (CudaCheckpointFailed), the worker left on its GPU.

    A sandboxed worker (`net`: this node's pod network) is dumped off its network for the
    moment of the dump (snapshotter/sandboxed.py); its address is given back either way."""
    sid = new_snapshot_id(fn)
    image_dir = work_dir / f"dump-{sid}"
    boxed = net is not None and sandboxed.is_sandboxed(pid)
    mounts = sandboxed.external_mounts(pid) if boxed else {}
    try:
        progress(f"checkpointing pid {pid}")
        extra = sandboxed.dump_options(mounts)
        address = await pod_network.park(net, pid) if boxed else ""  # type: ignore[arg-type]  # boxed: net is set
        try:
            d = await (_dump_with_gpu(criu, cuda, pid, image_dir, progress, extra) if cuda is not None
                       else criu_mod.dump(criu, pid, image_dir, extra=extra))
        finally:
            if address:
                await pod_network.unpark(net, pid, address)  # type: ignore[arg-type]  # parked: net is set
        progress(f"dumped {d.size_bytes / 2**20:.1f} MiB in {d.duration_s:.2f}s")
        draft = Manifest(id=sid, fn=fn, node=node, runtime="process",
                         created_ms=int(time.time() * 1000), sha256="", size_bytes=0, raw_bytes=0,
                         arch=platform.machine(), kernel=platform.release(),
                         criu_version=criu.version, port=port, spec_digest=spec_digest,
                         gpu=cuda is not None, gpu_indices=gpu_list(gpus) if cuda else "",
                         sandboxed=boxed, mounts=mounts)
        return await capture_image(store, index, image_dir, draft, policy, progress)
    finally:
        shutil.rmtree(image_dir, ignore_errors=True)


async def _dump_with_gpu(criu: criu_mod.Criu, cuda: CudaCheckpoint, pid: int, image_dir: Path,
                         progress: Progress, extra: tuple[str, ...] = ()) -> criu_mod.DumpResult:
    """cuda-checkpoint on, CRIU dump (left running), cuda-checkpoint off: the worker is off its
    GPU only while CRIU copies it. Moving it back is tried twice; if that still fails the
    snapshot is refused even when the dump succeeded, and the error says the worker is stuck."""
    progress(f"moving pid {pid}'s GPU memory to host memory (cuda-checkpoint)")
    await cuda.suspend(pid)  # on failure it has tried to leave the worker on its GPU
    try:
        return await criu_mod.dump(criu, pid, image_dir, extra=extra)
    finally:
        progress(f"moving pid {pid}'s GPU memory back to its GPU")
        try:
            await cuda.resume(pid, attempts=2)
        except CudaCheckpointFailed as exc:
            exc.why += "; the worker was NOT moved back onto its GPU and cannot serve GPU work"
            raise
