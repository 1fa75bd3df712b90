"""An index kept for many decisions (placement/live_index.py): updates from the ledger and a
changing workload leave it deciding exactly as a fresh index over the same state would."""
from __future__ import annotations

import pytest

from placement.engine import CapacityIndex, PodRequest, WorkloadProfile, decide
from placement.engine.decide import place
from tests.placement.conftest import node

SHARE = PodRequest(2000, 4096, 1, gpu_milli=500)
GPU_POD = PodRequest(10_000, 1, 1)
CPU_POD = PodRequest(4000, 1, 0)
PLENTY = 1 << 30


def test_an_update_makes_a_node_what_the_ledger_says_and_decisions_follow():
    fleet = [node("a", 2), node("b", 2, milli_used=(500,))]
    long_lived = CapacityIndex(fleet)
    assert decide(long_lived, SHARE, "thaw").node == "b"  # rankings built on this state
    now = [node("a", 2, milli_used=(500,)), node("b", 2)]  # someone else moved the pod
    assert [long_lived.update(v) for v in now] == [True, True]
    assert long_lived.nodes() == CapacityIndex(now).nodes()
    for policy in ("thaw", "best-fit", "fgd"):
        assert decide(long_lived, SHARE, policy) == decide(CapacityIndex(now), SHARE, policy)


def test_an_update_that_changes_nothing_says_so():
    ix = CapacityIndex([node("a", 1)])
    version = ix.version
    assert ix.update(node("a", 1)) is False
    assert ix.version == version


@pytest.mark.parametrize("view", [node("a", 2), node("a", 1, cpu=64_000), node("a", 1, model="A100"),
                                  node("stranger", 1)])
def test_an_update_refuses_a_changed_or_unknown_fleet(view):
    # scarcity and the fleet's totals are memoised per index: a new fleet needs a new index
    ix = CapacityIndex([node("a", 1)])
    before = ix.nodes()
    with pytest.raises(ValueError):
        ix.update(view)
    assert ix.nodes() == before


def test_a_new_workload_is_measured_against_at_once():
    # "tight" strands GPU only if GPU pods are expected (tests/placement/test_policies.py)
    fleet = [node("tight", 2, cpu=22_000, mem=PLENTY), node("roomy", 8, cpu=128_000, mem=PLENTY)]
    cpu_only = WorkloadProfile.from_requests([CPU_POD])
    mixed = WorkloadProfile.from_requests([GPU_POD, CPU_POD])
    ix = CapacityIndex(fleet, workload=cpu_only)
    assert decide(ix, CPU_POD, "thaw").node == "tight"
    ix.set_workload(mixed)
    assert decide(ix, CPU_POD, "thaw").node == "roomy"
    assert decide(ix, CPU_POD, "thaw") == decide(CapacityIndex(fleet, workload=mixed), CPU_POD, "thaw")


def test_weighted_counts_give_the_profile_of_the_requests_they_count():
    requests = [GPU_POD] * 6 + [CPU_POD] * 3 + [SHARE, PodRequest(2000, 8192, 1, gpu_milli=500)]
    counts: dict[PodRequest, float] = {}
    for r in requests:
        counts[r] = counts.get(r, 0) + 1
    assert WorkloadProfile.from_counts(counts) == WorkloadProfile.from_requests(requests)
    # decay scales every count alike: the same shapes, the same weights
    halved = {r: n / 2 for r, n in counts.items()}
    assert WorkloadProfile.from_counts(halved) == WorkloadProfile.from_requests(requests)


def test_a_long_lived_index_places_like_fresh_ones_through_updates_and_releases():
    profile = WorkloadProfile.from_requests([SHARE, GPU_POD, CPU_POD])
    ix = CapacityIndex([node(f"n{i}", 4) for i in range(3)], workload=profile)
    placed = [place(ix, SHARE, "thaw") for _ in range(5)]
    ix.release(placed[1], SHARE)
    outside = node("n2", 4, milli_used=(1000, 1000))  # the ledger's n2: another worker filled it
    ix.update(outside)
    fresh = CapacityIndex([ix.node("n0"), ix.node("n1"), outside], workload=profile)
    assert ix.nodes() == fresh.nodes()
    for request in (SHARE, GPU_POD, CPU_POD):
        assert decide(ix, request, "thaw") == decide(fresh, request, "thaw")
