"""GPU discovery: NVML when an NVIDIA driver answers, else the declared mock inventory."""

import logging

from bus_schemas.nodes import GpuCapacity

from agents.settings import MockGpu

log = logging.getLogger(__name__)


def discover_nvml() -> tuple[GpuCapacity, ...]:
    """Every NVIDIA GPU NVML reports, or () when there is no driver or no device."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("NVML unavailable (%s); using the declared GPU inventory", exc)
        return ()
    try:
        return tuple(_nvml_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount()))
    finally:
        pynvml.nvmlShutdown()


def _nvml_gpu(pynvml, index: int) -> GpuCapacity:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    name = pynvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else name
    uuid = pynvml.nvmlDeviceGetUUID(handle)
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    total = pynvml.nvmlDeviceGetMemoryInfo(handle).total
    return GpuCapacity(index=index, model=name, vram_mib=total // (1 << 20), uuid=uuid)


def mock_inventory(gpus: tuple[MockGpu, ...]) -> tuple[GpuCapacity, ...]:
    return tuple(GpuCapacity(index=i, model=g.model, vram_mib=g.vram_mib, uuid=f"mock-{i}")
                 for i, g in enumerate(gpus))


def discover(mock: tuple[MockGpu, ...], force_mock: bool) -> tuple[tuple[GpuCapacity, ...], str]:
    """(gpus, source) where source is 'nvml' or 'mock'."""
    found = () if force_mock else discover_nvml()
    return (found, "nvml") if found else (mock_inventory(mock), "mock")
