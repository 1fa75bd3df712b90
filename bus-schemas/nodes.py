"""What a node offers and that it is alive."""

from msgspec import Struct

from bus_schemas.version import SCHEMA_VERSION


class GpuCapacity(Struct, frozen=True, kw_only=True):
    index: int
    model: str
    vram_mib: int
    uuid: str = ""
    healthy: bool = True


class NodeCapacity(Struct, frozen=True, kw_only=True):
    """Agent -> placement, last value per node. Totals only: the ledger in Redis holds use."""

    node: str
    cpu_milli: int
    memory_mib: int
    gpus: tuple[GpuCapacity, ...] = ()
    gpu_source: str = "mock"  # "nvml" or "mock"
    runtimes: tuple[str, ...] = ("process",)
    snapshot_support: tuple[str, ...] = ()  # e.g. ("criu", "cuda-checkpoint")
    at_ms: int = 0
    # "" while healthy; else why the node works below what it was set up for, e.g. its
    # snapshotter stopped answering (pods cold-start until it is back).
    degraded: str = ""
    v: int = SCHEMA_VERSION


class NodeHeartbeat(Struct, frozen=True, kw_only=True):
    """Agent -> placement, every few seconds on core NATS: alive, and the pods it runs."""

    node: str
    at_ms: int
    pods: tuple[str, ...] = ()
    v: int = SCHEMA_VERSION
