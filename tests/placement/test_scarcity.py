"""Scarce capacity: shapes few nodes could hold weigh more, and rare large nodes open last."""
from __future__ import annotations

import pytest

from placement.engine import CapacityIndex, Placed, PodRequest, WorkloadProfile, decide
from placement.engine.decide import place
from placement.engine.scarcity import rare_node_states, supply_factors
from tests.placement.conftest import node

PLENTY = 1 << 30
COMMON = [node(f"common-{i}", 8, cpu=96_000, mem=PLENTY) for i in range(16)]
BIG = node("big", 8, cpu=128_000, mem=PLENTY)  # 8 of 136 GPUs could hold all of it


def profile_of(*requests: PodRequest) -> WorkloadProfile:
    return WorkloadProfile.from_requests(requests)


@pytest.mark.parametrize(
    ("shape", "factor"),
    [
        (PodRequest(8000, 1, 1), 1.0),                                   # any node: 26 of 26
        (PodRequest(8000, 1, 1, gpu_models=frozenset({"A10"})), 13.0),  # only the A10 node
        (PodRequest(8000, 1, 4), 26 / 24),                               # the 8-GPU nodes
        (PodRequest(100_000, 1, 1), 1.0),                                # nothing could: 1
        (PodRequest(8000, 1, 0), 1.0),                                   # CPU-only: 1
    ],
)
def test_a_shape_weighs_the_fleets_gpus_over_those_that_could_hold_it(shape, factor):
    fleet = CapacityIndex([node("a10", 2, "A10", cpu=64_000, mem=PLENTY)]
                          + [node(f"t4-{i}", 8, cpu=64_000, mem=PLENTY) for i in range(3)])
    [pod] = profile_of(shape).pods
    assert supply_factors(fleet, (pod,)) == (pytest.approx(factor),)


def test_supply_factors_ignore_what_is_in_use():
    used = node("a10", 2, "A10", cpu=64_000, mem=PLENTY, milli_used=(1000, 1000))
    fresh = node("a10", 2, "A10", cpu=64_000, mem=PLENTY)
    others = [node(f"t4-{i}", 8, cpu=64_000, mem=PLENTY) for i in range(3)]
    pods = profile_of(PodRequest(8000, 1, 1, gpu_models=frozenset({"A10"}))).pods
    assert supply_factors(CapacityIndex([used, *others]), pods) == supply_factors(
        CapacityIndex([fresh, *others]), pods)


@pytest.mark.parametrize(
    ("fleet", "rare"),
    [
        # all of "big" could come from 8 of 136 GPUs (<= 1/16): rare; a common node from all
        (COMMON + [BIG], {"big"}),
        # with a second big node, 16 of 144 GPUs: no longer rare
        (COMMON + [BIG, node("big-2", 8, cpu=128_000, mem=PLENTY)], set()),
        # one-GPU nodes are never rare: a request for all of one is a one-GPU request
        (COMMON + [node("cpu-rich", 1, cpu=512_000, mem=PLENTY)], set()),
    ],
)
def test_rare_nodes_are_those_few_others_could_stand_in_for(fleet, rare):
    index = CapacityIndex(fleet)
    states = rare_node_states(index, share_cap=16)
    assert {n.name for n in fleet
            if (index.internal(n.name).layout, n.cpu_milli, n.memory_mib) in states} == rare


GPU_POD = PodRequest(11_000, 1, 1)  # 11 cores per GPU: a common node's CPU backs all 8 GPUs
HUNGRY = PodRequest(24_000, 1, 1)   # on a common node, 72 cores are left for 7 GPUs


@pytest.mark.parametrize(
    ("rare_cap", "node_name"),
    [
        # Thaw's stranding measure alone sends the CPU-hungry pod to the one node whose CPU
        # it strands no GPU of: the only node that could take a 128-core 8-GPU pod
        (0, "big"),
        # opened last, the big node stays whole while a common node can take the pod
        (16, "common-0"),
    ],
)
def test_thaw_opens_a_rare_large_node_last(monkeypatch, rare_cap, node_name):
    from placement.engine.policies import thaw
    monkeypatch.setattr(thaw, "RARE_NODE_SHARE_CAP", rare_cap)
    index = CapacityIndex(COMMON + [BIG], workload=profile_of(GPU_POD, GPU_POD, HUNGRY))
    assert decide(index, HUNGRY, "thaw").node == node_name


def test_thaw_opens_a_rare_node_when_nothing_else_fits():
    index = CapacityIndex(COMMON + [BIG], workload=profile_of(GPU_POD))
    assert decide(index, PodRequest(100_000, 1, 1), "thaw").node == "big"
    first = place(index, PodRequest(64_000, 1, 1), "thaw")
    assert isinstance(first, Placed) and first.node != "big"


ANY_GPU = PodRequest(8000, 1, 1)
A10_ONLY = PodRequest(8000, 1, 1, gpu_models=frozenset({"A10"}))


@pytest.mark.parametrize(
    ("supply", "node_name"),
    [
        # popularity alone (1 in 16) moves the growth by less than a level, and best-fit
        # then fills the small A10 node with a pod that could go anywhere
        (False, "a10"),
        # by supply (the A10 shape has 2 of 26 GPUs), the T4 node is clearly the better
        (True, "t4-0"),
    ],
)
def test_thaw_keeps_a_scarce_model_for_the_requests_that_need_it(monkeypatch, supply, node_name):
    from placement.engine.policies import thaw
    monkeypatch.setattr(thaw, "SUPPLY_WEIGHTS", supply)
    fleet = [node("a10", 2, "A10", cpu=64_000, mem=PLENTY)] + [
        node(f"t4-{i}", 8, cpu=64_000, mem=PLENTY) for i in range(3)]
    profile = profile_of(*[ANY_GPU] * 15, A10_ONLY)
    assert decide(CapacityIndex(fleet, workload=profile), ANY_GPU, "thaw").node == node_name
