"""What this node can checkpoint of a GPU worker, detected once at start-up.

NVIDIA's route is `cuda-checkpoint` (github.com/NVIDIA/cuda-checkpoint): it moves a process's
device memory into host memory (``--toggle``) so CRIU can dump it, and back after restore. It
needs driver 550 or newer (the checkpoint API appeared in r550; r570+ adds ``--action`` and
CRIU 4.x integration). Detection here only reads facts; it does not try a checkpoint.

Where `detect()` says supported, the snapshotter announces "cuda-checkpoint" (the agent reports
it in NodeCapacity.snapshot_support) and, for the process runtime, a worker whose pod holds
GPUs is dumped with its device memory: toggle off the GPU, ``criu dump --leave-running``,
toggle back; a restored one is toggled back onto its GPU before the restore is answered
(cuda_state.py, capture.py, restores.py). Such a snapshot's manifest has ``gpu`` and the GPU
indices; only a node announcing "cuda-checkpoint" is offered it, and only a pod holding the
same GPU indices restores it. The container runtime does not checkpoint GPU memory.

NOT PROVEN ON A DEVICE: no GPU was available to this repository's test runs. The tests drive a
stand-in cuda-checkpoint and prove the orchestration only (tests/snapshots/test_gpu_checkpoint.py).
"""

import shutil
from dataclasses import dataclass

MIN_DRIVER_MAJOR = 550


@dataclass(frozen=True, slots=True)
class GpuCheckpointSupport:
    supported: bool
    driver_version: str  # "" when no NVIDIA driver answered
    cuda_checkpoint: str  # path of the binary, "" when absent
    reason: str  # why not, or "ok"

    def capability(self) -> tuple[str, ...]:
        """The entry for NodeCapacity.snapshot_support."""
        return ("cuda-checkpoint",) if self.supported else ()


def _driver_version() -> str:
    try:
        import pynvml  # nvidia-ml-py; an import here, not at module load, so CPU nodes never pay it
    except ImportError:
        return ""
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver here
        return ""
    try:
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else v
    finally:
        pynvml.nvmlShutdown()


def detect(cuda_checkpoint: str | None = None) -> GpuCheckpointSupport:
    """Whether GPU memory can be checkpointed here: a cuda-checkpoint binary (given or on PATH)
    and an NVIDIA driver of at least MIN_DRIVER_MAJOR."""
    binary = cuda_checkpoint or shutil.which("cuda-checkpoint") or ""
    driver = _driver_version()
    if not driver:
        return GpuCheckpointSupport(False, "", binary, "no NVIDIA driver (NVML did not answer)")
    if not binary:
        return GpuCheckpointSupport(False, driver, "", "cuda-checkpoint not on PATH")
    try:
        major = int(driver.split(".")[0])
    except ValueError:
        return GpuCheckpointSupport(False, driver, binary, f"unparsable driver version {driver!r}")
    if major < MIN_DRIVER_MAJOR:
        return GpuCheckpointSupport(False, driver, binary,
                                    f"driver {driver} < {MIN_DRIVER_MAJOR} has no checkpoint API")
    return GpuCheckpointSupport(True, driver, binary, "ok")
