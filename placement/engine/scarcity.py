"""Scarce capacity: how much of the fleet could hold a request at all.

FGD's measure is local: it asks what a placement does to *one* node's usefulness to the
expected workload, weighing each request shape by how often it comes.  It cannot see that
some shapes have few places to go anywhere in the fleet: a shape that only one GPU model can
run, or a pod as large as the fleet's biggest nodes.  Capacity that only such requests can
use is spent for good when a request that fits anywhere takes it.  Two fleet-level facts say
where that is, both pure functions of the fleet's node capacities (not of their use), so
they hold for the life of an index:

- `supply_factors`: per profile shape, the fleet's GPUs over the GPUs of the nodes that could
  hold the shape if they were empty (1 for a shape most nodes can hold; ~7 for a shape only
  T4s can run on the trace's fleet, ~20 for one only the 39 largest nodes can hold).
- `rare_node_states`: the node capacities (GPU layout, CPU, memory; several GPUs) that a
  request asking for all of one such node could get from at most `1 / share_cap` of the
  fleet's GPUs - whether or not the profile expects such a request yet.

"Could hold": enough CPU and memory, and at least as many GPUs of an allowed model as asked
(model alone: contiguity and sizes are left to the filters).
"""
from __future__ import annotations

from collections import Counter

from placement.engine.index import CapacityIndex, Layout
from placement.engine.workload import TypicalPod

NodeClass = tuple[Layout, int, int]
"""A node capacity: GPU layout, CPU milli, memory MiB."""


def node_classes(index: CapacityIndex) -> Counter[NodeClass]:
    """How many nodes of each capacity the fleet has (GPU nodes only)."""
    return Counter((n.layout, n.cpu_milli, n.memory_mib) for n in index.ordered()
                   if n.layout.models)


def _holds(node: NodeClass, cpu_milli: int, memory_mib: int, gpu_count: int,
           gpu_models: frozenset[str]) -> bool:
    layout, cpu, mem = node
    if cpu < cpu_milli or mem < memory_mib:
        return False
    allowed = sum(1 for m in layout.models if not gpu_models or m in gpu_models)
    return allowed >= gpu_count


def host_gpus(classes: Counter[NodeClass], cpu_milli: int, memory_mib: int, gpu_count: int,
              gpu_models: frozenset[str] = frozenset()) -> int:
    """GPUs on the nodes that could hold the request if they were empty."""
    return sum(len(node[0].models) * n for node, n in classes.items()
               if _holds(node, cpu_milli, memory_mib, gpu_count, gpu_models))


def supply_factors(index: CapacityIndex, pods: tuple[TypicalPod, ...]) -> tuple[float, ...]:
    """Per shape: fleet GPUs over the GPUs that could hold it; 1.0 for CPU-only shapes and for
    shapes nothing could hold (they weigh as blind in fragmentation either way)."""
    classes = node_classes(index)
    fleet = sum(len(node[0].models) * n for node, n in classes.items())
    factors = []
    for pod in pods:
        hosts = host_gpus(classes, pod.cpu_milli, pod.memory_mib, pod.gpu_count,
                          pod.gpu_models) if pod.gpu_count else 0
        factors.append(fleet / hosts if hosts else 1.0)
    return tuple(factors)


def rare_node_states(index: CapacityIndex, share_cap: int) -> frozenset[NodeClass]:
    """Capacities of multi-GPU nodes whose whole (all GPUs, CPU and memory) at most
    1/`share_cap` of the fleet's GPUs could provide, of any model."""
    classes = node_classes(index)
    fleet = sum(len(node[0].models) * n for node, n in classes.items())
    rare = set()
    for node in classes:
        layout, cpu, mem = node
        if len(layout.models) < 2:
            continue
        if host_gpus(classes, cpu, mem, len(layout.models)) * share_cap <= fleet:
            rare.add(node)
    return frozenset(rare)
