"""What this node can checkpoint of a GPU worker, detected once at start-up.

NVIDIA's route is `cuda-checkpoint` (github.com/NVIDIA/cuda-checkpoint): it moves a process's
device memory into host memory (``--toggle``) so CRIU can dump it, and back after restore. It
needs driver 550 or newer (the checkpoint API appeared in r550; r555+ is needed for
multi-process and more). Detection here only reads facts; it does not try a checkpoint.
Not proven on a device in this repository's test runs: no GPU was available.
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
