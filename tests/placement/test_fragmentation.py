"""Fragmentation: FGD's measure, and the GPU that a node's CPU and memory strand (Thaw's)."""
from __future__ import annotations

import pytest

from placement.engine import CapacityIndex, PodRequest, WorkloadProfile
from placement.engine.fragmentation import FragTable
from placement.engine.policies.thaw import cpu_scarce
from tests.placement.conftest import node

WHOLE_GPU_POD = PodRequest(10_000, 20_000, 1)  # 10 cores and 20 GiB per GPU
PROFILE = WorkloadProfile.from_requests([WHOLE_GPU_POD])


def _frag(gpus_free: int, cpu_free: int, mem_free: int, *, stranding: bool) -> float:
    fleet = CapacityIndex([node("a", 4, cpu=cpu_free, mem=mem_free,
                                milli_used=(1000,) * (4 - gpus_free))])
    group = next(iter(fleet.groups()))
    table = FragTable(PROFILE, use_memory=True, stranding=stranding)
    return table.frag(group.layout, group.milli_free, cpu_free, mem_free)


@pytest.mark.parametrize(
    ("gpus_free", "cpu_free", "mem_free", "fgd", "with_stranding"),
    [
        # CPU and memory for all four free GPUs: nothing is fragmented either way
        (4, 40_000, 80_000, 0, 0),
        # CPU for two of four: FGD sees one pod fit and calls it unfragmented; half is stranded
        (4, 20_000, 80_000, 0, 2000),
        # memory for one of four: three quarters stranded
        (4, 40_000, 20_000, 0, 3000),
        # CPU for no pod at all: every free GPU is fragmented, by FGD's own rule
        (4, 5_000, 80_000, 4000, 4000),
        # two GPUs free, CPU for both: nothing stranded
        (2, 20_000, 80_000, 0, 0),
    ],
)
def test_stranding_counts_gpu_that_cpu_and_memory_cannot_back(
        gpus_free, cpu_free, mem_free, fgd, with_stranding):
    assert _frag(gpus_free, cpu_free, mem_free, stranding=False) == pytest.approx(fgd)
    assert _frag(gpus_free, cpu_free, mem_free, stranding=True) == pytest.approx(with_stranding)


CPU_ONLY = PodRequest(200_000, 1, 0)


@pytest.mark.parametrize(
    ("requests", "cpu_per_gpu", "mem_per_gpu", "scarce"),
    [
        # 10 cores and 20 GiB per GPU asked; 16 cores and 64 GiB per GPU in the fleet
        ([WHOLE_GPU_POD], 16_000, 65_536, False),
        # a CPU-only pod of 200 cores for every 9 GPU pods: 32 cores per GPU asked
        ([WHOLE_GPU_POD] * 9 + [CPU_ONLY], 16_000, 65_536, True),
        ([WHOLE_GPU_POD] * 9 + [CPU_ONLY], 40_000, 65_536, False),
        # 20 GiB per GPU asked, 16 GiB per GPU in the fleet: memory is scarce
        ([WHOLE_GPU_POD], 16_000, 16_384, True),
    ],
)
def test_cpu_is_scarce_when_the_workload_asks_more_per_gpu_than_the_fleet_has(
        requests, cpu_per_gpu, mem_per_gpu, scarce):
    fleet = CapacityIndex([node("a", 4, cpu=4 * cpu_per_gpu, mem=4 * mem_per_gpu)],
                          workload=WorkloadProfile.from_requests(requests))
    table = FragTable(fleet.workload, use_memory=True, stranding=True)
    assert cpu_scarce(fleet, table) is scarce
