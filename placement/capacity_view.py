"""The capacity view a decision is made over: live nodes and what the ledger reserves."""

from thaw_core.store.nodes import NodeUsage

from placement.engine.index import CapacityIndex
from placement.engine.model import GpuView, NodeView


def node_view(n: NodeUsage) -> NodeView:
    gpus = tuple(GpuView(index=g.index, model=g.model, vram_mib=g.vram_mib, vram_used_mib=g.vram_reserved_mib,
                         milli_used=g.milli_reserved) for g in n.gpus)
    return NodeView(name=n.name, cpu_milli=n.cpu_milli, cpu_used_milli=n.cpu_reserved, memory_mib=n.memory_mib,
                    memory_used_mib=n.memory_reserved, gpus=gpus)


def live_index(nodes: list[NodeUsage], now_ms: int, node_timeout_s: float) -> CapacityIndex:
    """An index of the nodes that heartbeated within node_timeout_s."""
    cutoff = now_ms - int(node_timeout_s * 1000)
    return CapacityIndex(node_view(n) for n in nodes if n.heartbeat_ms >= cutoff)
