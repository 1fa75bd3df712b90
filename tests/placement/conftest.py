"""Small fleets for placement specifications."""
from __future__ import annotations

from placement.engine import GpuView, NodeView


def node(name: str, gpus: int = 0, model: str = "T4", *, cpu: int = 32_000, mem: int = 65_536,
         vram: int = 16_384, milli_used: tuple[int, ...] = (), cpu_used: int = 0,
         mem_used: int = 0) -> NodeView:
    """A node with `gpus` GPUs of `model`; `milli_used` per GPU (missing ones are free)."""
    used = tuple(milli_used) + (0,) * (gpus - len(milli_used))
    views = tuple(GpuView(i, model, vram, vram * u // 1000, u) for i, u in enumerate(used))
    return NodeView(name, cpu, cpu_used, mem, mem_used, views)
