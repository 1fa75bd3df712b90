"""The vocabulary of placement: a capacity view, a request, a decision.

Everything is an integer: CPU in milli-cores, memory and vRAM in MiB, GPU compute in
milli-GPU (1000 = one whole GPU).  The types are frozen so a view can be shared
between a decision and the caller that later commits it; the mutable bookkeeping lives
in `index.CapacityIndex`, which hands out fresh views.
"""
from __future__ import annotations

from dataclasses import dataclass, field

GPU_MILLI = 1000
"""Milli-GPU in one whole GPU."""


@dataclass(frozen=True, slots=True)
class GpuView:
    """One GPU of a node: `index` is its position on the node (contiguity is by index)."""

    index: int
    model: str
    vram_mib: int
    vram_used_mib: int = 0
    milli_used: int = 0

    @property
    def milli_free(self) -> int:
        return GPU_MILLI - self.milli_used

    @property
    def vram_free_mib(self) -> int:
        return self.vram_mib - self.vram_used_mib

    @property
    def is_free(self) -> bool:
        """True when nothing at all is charged on this GPU."""
        return self.milli_used == 0 and self.vram_used_mib == 0


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node's capacity and what is already charged on it."""

    name: str
    cpu_milli: int
    cpu_used_milli: int
    memory_mib: int
    memory_used_mib: int
    gpus: tuple[GpuView, ...] = ()

    @property
    def cpu_free_milli(self) -> int:
        return self.cpu_milli - self.cpu_used_milli

    @property
    def memory_free_mib(self) -> int:
        return self.memory_mib - self.memory_used_mib


@dataclass(frozen=True, slots=True)
class PodRequest:
    """What a worker asks for.

    - `gpu_count == 0`: CPU-only.
    - `gpu_count == 1` with `gpu_milli < 1000` and/or `vram_mib`: a share of one GPU.  A GPU
      fits if its free milli >= the milli charged and its free vRAM >= the vRAM charged
      (see `charge`).  `gpu_count == 1` with neither set means one whole GPU.
    - `gpu_count > 1`: that many whole, entirely free GPUs, contiguous by index, of one model.
    - `gpu_models`: allowed GPU models; empty means any.
    """

    cpu_milli: int
    memory_mib: int
    gpu_count: int
    gpu_milli: int = 0
    vram_mib: int = 0
    gpu_models: frozenset[str] = field(default_factory=frozenset)
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if min(self.cpu_milli, self.memory_mib, self.gpu_count, self.gpu_milli, self.vram_mib) < 0:
            raise ValueError(f"resource amounts must be >= 0: {self}")
        if self.gpu_milli > GPU_MILLI:
            raise ValueError(f"gpu_milli is the share of one GPU, at most {GPU_MILLI}: {self}")
        # Requests key the engine's memo tables on every decision: hash once.
        object.__setattr__(self, "_hash", hash((self.cpu_milli, self.memory_mib, self.gpu_count,
                                                self.gpu_milli, self.vram_mib, self.gpu_models)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def is_whole_gpu(self) -> bool:
        """True when each GPU is taken whole (multi-GPU, or one GPU with no share given)."""
        if self.gpu_count > 1:
            return True
        return self.gpu_count == 1 and (
            self.gpu_milli == GPU_MILLI or (self.gpu_milli == 0 and self.vram_mib == 0)
        )

    def charge(self, gpu: GpuView) -> tuple[int, int]:
        """(milli, vram MiB) this request charges on `gpu`, per GPU.

        Whole GPUs charge everything.  A vRAM-only share charges the milli that fraction of
        the GPU's memory stands for, rounded up; a milli-only share charges the vRAM that
        fraction stands for, rounded down.
        """
        return self.charge_for(gpu.vram_mib)

    def charge_for(self, gpu_vram_mib: int) -> tuple[int, int]:
        """`charge` on a GPU of `gpu_vram_mib` MiB."""
        if self.is_whole_gpu:
            return GPU_MILLI, gpu_vram_mib
        if self.gpu_milli == 0:
            return -(-self.vram_mib * GPU_MILLI // gpu_vram_mib), self.vram_mib
        if self.vram_mib == 0:
            return self.gpu_milli, gpu_vram_mib * self.gpu_milli // GPU_MILLI
        return self.gpu_milli, self.vram_mib

    def charge_milli(self, vram_mib: int) -> int:
        """The milli `charge` gives on a GPU of `vram_mib` MiB."""
        return self.charge_for(vram_mib)[0]

    @property
    def gpu_milli_total(self) -> int:
        """The GPU milli this request asks for in all (what the trace's arrival counts)."""
        if self.gpu_count == 0:
            return 0
        if self.is_whole_gpu:
            return GPU_MILLI * self.gpu_count
        return self.gpu_milli


@dataclass(frozen=True, slots=True)
class Placed:
    """A decision to place: `gpus` are indices on `node`; the shares are per GPU."""

    node: str
    gpus: tuple[int, ...] = ()
    gpu_milli: int = 0
    vram_mib: int = 0


@dataclass(frozen=True, slots=True)
class Unplaceable:
    """No node fits: filter name -> why it rejected nodes (aggregated, human-readable)."""

    reasons: dict[str, str]


Decision = Placed | Unplaceable
