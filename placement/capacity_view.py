"""The capacity view a decision is made over: live nodes and what the ledger reserves."""

from thaw_core.store.nodes import NodeUsage

from placement.engine.index import CapacityIndex
from placement.engine.model import GpuView, NodeView


def node_view(n: NodeUsage) -> NodeView:
    gpus = tuple(GpuView(index=g.index, model=g.model, vram_mib=g.vram_mib, vram_used_mib=g.vram_reserved_mib,
                         milli_used=g.milli_reserved) for g in n.gpus)
    return NodeView(name=n.name, cpu_milli=n.cpu_milli, cpu_used_milli=n.cpu_reserved, memory_mib=n.memory_mib,
                    memory_used_mib=n.memory_reserved, gpus=gpus)


def live_views(nodes: list[NodeUsage], now_ms: int, node_timeout_s: float) -> list[NodeView]:
    """Views of the nodes a new pod may go to: those that heartbeated within node_timeout_s and
    are not draining (`thaw drain`)."""
    cutoff = now_ms - int(node_timeout_s * 1000)
    return [node_view(n) for n in nodes if n.heartbeat_ms >= cutoff and not n.draining]


def live_index(nodes: list[NodeUsage], now_ms: int, node_timeout_s: float) -> CapacityIndex:
    """An index of the nodes that heartbeated within node_timeout_s."""
    return CapacityIndex(live_views(nodes, now_ms, node_timeout_s))


Capacity = tuple[int, int, tuple[tuple[str, int], ...]]
"""A node's CPU milli, memory MiB and (model, vRAM MiB) per GPU."""


def capacity(v: NodeView) -> Capacity:
    """`v` without its use: two views of the same node are equal however much is reserved, so an
    index can follow a fleet of unchanged capacities with updates."""
    return v.cpu_milli, v.memory_mib, tuple((g.model, g.vram_mib) for g in v.gpus)
