"""Thaw's placement engine: pure decisions over a capacity view (DESIGN.md section 5).

Import from here: `CapacityIndex`, `decide`, `POLICIES`, and the model types.
"""
from placement.engine.decide import POLICIES, decide, place
from placement.engine.index import CapacityIndex
from placement.engine.model import GpuView, NodeView, Placed, PodRequest, Unplaceable
from placement.engine.workload import TypicalPod, WorkloadProfile

__all__ = ["POLICIES", "CapacityIndex", "GpuView", "NodeView", "Placed", "PodRequest",
           "TypicalPod", "Unplaceable", "WorkloadProfile", "decide", "place"]
