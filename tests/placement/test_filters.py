"""Filters: which nodes can hold a request, and the reasons when none can."""
from __future__ import annotations

import pytest

from placement.engine import CapacityIndex, GpuView, NodeView, Placed, PodRequest, Unplaceable, decide
from tests.placement.conftest import node

T4 = frozenset({"T4"})
A10 = frozenset({"A10"})


@pytest.mark.parametrize(
    ("fleet", "request_", "expected"),
    [
        # a share fits a GPU with enough free milli
        ([node("a", 1, milli_used=(500,))], PodRequest(1000, 1024, 1, gpu_milli=500),
         Placed("a", (0,), 500, 8192)),
        # ... and not one with too little
        ([node("a", 1, milli_used=(600,))], PodRequest(1000, 1024, 1, gpu_milli=500), "gpu-capacity"),
        # a vRAM-only share is charged the milli its vRAM stands for, rounded up
        ([node("a", 1, vram=16_000)], PodRequest(1000, 1024, 1, vram_mib=4_001),
         Placed("a", (0,), 251, 4_001)),
        # a vRAM share needs free vRAM even where milli is free
        ([NodeView("a", 8000, 0, 8000, 0, (GpuView(0, "T4", 16_000, 15_000, 0),))],
         PodRequest(1000, 1024, 1, gpu_milli=100, vram_mib=2_000), "gpu-capacity"),
        # one whole GPU needs an entirely free GPU
        ([node("a", 2, milli_used=(100,))], PodRequest(1000, 1024, 1, gpu_milli=1000),
         Placed("a", (1,), 1000, 16_384)),
        # model constraints: allowed model fits
        ([node("a", 1, "T4")], PodRequest(1000, 1024, 1, gpu_milli=300, gpu_models=T4),
         Placed("a", (0,), 300, 4915)),
        # ... other models do not
        ([node("a", 1, "T4")], PodRequest(1000, 1024, 1, gpu_milli=300, gpu_models=A10), "gpu-model"),
        # a GPU request never lands on a CPU-only node
        ([node("a", 0)], PodRequest(1000, 1024, 1, gpu_milli=300), "gpu-model"),
        # CPU-only requests ignore GPUs and models
        ([node("a", 1, milli_used=(1000,))], PodRequest(1000, 1024, 0), Placed("a")),
        # CPU and memory limits
        ([node("a", 1, cpu=4000, cpu_used=3500)], PodRequest(1000, 1024, 0), "cpu"),
        ([node("a", 1, mem=4096, mem_used=4000)], PodRequest(1000, 1024, 0), "memory"),
    ],
)
def test_filter_table(fleet, request_, expected):
    decision = decide(CapacityIndex(fleet), request_, "first-fit")
    if isinstance(expected, Placed):
        assert decision == expected
    else:
        assert isinstance(decision, Unplaceable)
        assert list(decision.reasons) == [expected]


def test_multi_gpu_pod_gets_contiguous_gpus():
    fleet = [node("a", 4, milli_used=(0, 300, 0, 0))]
    decision = decide(CapacityIndex(fleet), PodRequest(1000, 1024, 2, gpu_milli=1000), "thaw")
    assert decision == Placed("a", (2, 3), 1000, 16_384)


def test_free_gpus_that_are_not_adjacent_do_not_hold_a_multi_gpu_pod():
    fleet = [node("a", 4, milli_used=(0, 300, 0, 300))]
    decision = decide(CapacityIndex(fleet), PodRequest(1000, 1024, 2, gpu_milli=1000), "thaw")
    assert isinstance(decision, Unplaceable)
    assert "contiguous" in decision.reasons["gpu-capacity"]


def test_reasons_count_nodes_per_filter():
    fleet = [node(f"full{i}", 1, milli_used=(1000,)) for i in range(3)] + [
        node("a10", 1, "A10"), node("busy", 1, cpu=1000, cpu_used=1000)]
    request = PodRequest(2000, 1024, 1, gpu_milli=500, gpu_models=frozenset({"T4"}))
    decision = decide(CapacityIndex(fleet), request, "best-fit")
    assert isinstance(decision, Unplaceable)
    assert decision.reasons["gpu-capacity"].startswith("3 nodes")
    assert decision.reasons["gpu-model"].startswith("1 nodes")
    assert decision.reasons["cpu"].startswith("1 nodes")
