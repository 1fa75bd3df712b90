"""Policies: each one's preference on small fleets, and their shared contract."""
from __future__ import annotations

import pytest

from placement.engine import POLICIES, CapacityIndex, Placed, PodRequest, WorkloadProfile, decide
from placement.engine.decide import place
from tests.placement.conftest import node

SHARE = PodRequest(2000, 4096, 1, gpu_milli=500)


def test_policies_are_listed_by_name():
    assert POLICIES == ("first-fit", "best-fit", "packing", "fgd", "thaw")


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(ValueError, match="first-fit.*thaw"):
        decide(CapacityIndex([node("a", 1)]), SHARE, "round-robin")


def test_binpack_is_best_fit():
    fleet = [node("empty", 2), node("used", 2, milli_used=(400,))]
    ix = CapacityIndex(fleet)
    assert decide(ix, SHARE, "binpack") == decide(ix, SHARE, "best-fit")


def test_the_production_worker_runs_the_policy_the_trace_replay_measures():
    # No fork for production: the worker decides with the engine's `decide` and the spec's
    # policy, which is "thaw" unless the spec names another, the code bench.trace_replay scores.
    from bus_schemas.functions import FunctionSpec
    from placement import worker
    from placement.engine.decide import decide as engine_decide
    from placement.engine.policies import policy, thaw
    assert worker.decide is engine_decide
    assert FunctionSpec(name="f", command=("x",)).placement_policy == "thaw"
    assert policy("thaw") is thaw.choose


@pytest.mark.parametrize(
    ("policy", "fleet", "request_", "node_name", "gpus"),
    [
        # first-fit takes the first node listed that fits
        ("first-fit", [node("a", 8), node("b", 1, milli_used=(500,))], SHARE, "a", (0,)),
        # best-fit leaves the least free capacity, on the tightest GPU
        ("best-fit", [node("a", 8), node("b", 2, milli_used=(300, 500))], SHARE, "b", (1,)),
        # packing shares a GPU already in use before touching free ones
        ("packing", [node("a", 1), node("b", 4, milli_used=(0, 0, 400))], SHARE, "b", (2,)),
        # packing starts the smallest free node when nothing is in use
        ("packing", [node("big", 8), node("small", 1)], SHARE, "small", (0,)),
        # fgd avoids leaving a GPU share no expected request can use
        ("fgd", [node("a", 1, milli_used=(400,)), node("b", 1, milli_used=(500,))],
         SHARE, "b", (0,)),
        # thaw: same measure, so same choice
        ("thaw", [node("a", 1, milli_used=(400,)), node("b", 1, milli_used=(500,))],
         SHARE, "b", (0,)),
        # thaw keeps whole nodes free for whole-node requests
        ("thaw", [node("a", 8), node("b", 8, milli_used=(1000,))], SHARE, "b", (1,)),
    ],
)
def test_policy_preference(policy, fleet, request_, node_name, gpus):
    profile = WorkloadProfile.from_requests([SHARE, SHARE, PodRequest(8000, 8192, 8)])
    decision = decide(CapacityIndex(fleet, workload=profile), request_, policy)
    assert isinstance(decision, Placed)
    assert (decision.node, decision.gpus) == (node_name, gpus)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_respects_cpu_memory_and_model_limits(policy):
    fleet = [node("tiny", 1, cpu=1000), node("nomem", 1, mem=1024), node("a10", 1, "A10"),
             node("ok", 1, "T4")]
    request = PodRequest(2000, 4096, 1, gpu_milli=500, gpu_models=frozenset({"T4"}))
    assert decide(CapacityIndex(fleet), request, policy).node == "ok"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_fills_a_fleet_without_overcommitting(policy):
    ix = CapacityIndex([node(f"n{i}", 4, cpu=16_000) for i in range(3)])
    placed = [place(ix, SHARE, policy) for _ in range(30)]
    assert sum(isinstance(p, Placed) for p in placed) == 24  # 12 GPUs x 2 shares, CPU allows 24
    for view in ix.nodes():
        assert all(g.milli_used <= 1000 for g in view.gpus)
        assert view.cpu_used_milli <= view.cpu_milli


@pytest.mark.parametrize("policy", POLICIES)
def test_deciding_does_not_change_capacity(policy):
    ix = CapacityIndex([node("a", 2), node("b", 2, milli_used=(300,))])
    before = ix.nodes()
    decide(ix, SHARE, policy)
    decide(ix, PodRequest(1000, 1024, 2), policy)
    assert ix.nodes() == before


def test_thaw_learns_the_workload_when_none_is_given():
    ix = CapacityIndex([node(f"n{i}", 2) for i in range(4)])
    for _ in range(5):
        assert isinstance(place(ix, SHARE, "thaw"), Placed)
    assert sum(ix.seen.values()) == 5


GPU_POD = PodRequest(10_000, 1, 1)  # one whole GPU and 10 cores
PLENTY = 1 << 30


@pytest.mark.parametrize(
    ("policy", "node_name"),
    [
        # FGD asks only whether one more GPU pod fits on "tight" (it does), and best-fit
        # prefers the fuller node: both put 4 cores where the GPUs need them
        ("fgd", "tight"),
        ("best-fit", "tight"),
        # Thaw sees "tight" strand part of a GPU (22 cores back 2 GPUs, 18 would not)
        ("thaw", "roomy"),
    ],
)
def test_cpu_only_pods_go_where_no_gpu_needs_the_cpu(policy, node_name):
    fleet = [node("tight", 2, cpu=22_000, mem=PLENTY), node("roomy", 8, cpu=128_000, mem=PLENTY)]
    profile = WorkloadProfile.from_requests([GPU_POD, PodRequest(4000, 1, 0)])
    decision = decide(CapacityIndex(fleet, workload=profile), PodRequest(4000, 1, 0), policy)
    assert decision.node == node_name


@pytest.mark.parametrize(
    ("fleet_extra", "node_name"),
    [
        # CPU is plentiful (a CPU-rich node the request cannot use, for lack of memory): both
        # choices strand more than the sigmoid distinguishes, so best-fit packs onto "small"
        ([node("cpu-rich", 0, cpu=10_000_000, mem=0)], "small"),
        # CPU is scarce (the workload asks 32 cores per GPU; the fleet has 10): every milli
        # stranded counts, and "big" strands 5,850 milli where "small" strands 6,300
        ([], "big"),
    ],
)
def test_cpu_only_pods_strand_the_least_gpu_when_cpu_is_scarce(fleet_extra, node_name):
    fleet = [node("small", 7, cpu=72_000, mem=PLENTY), node("big", 16, cpu=160_000, mem=PLENTY)]
    profile = WorkloadProfile.from_requests([GPU_POD] * 9 + [PodRequest(200_000, 1, 0)])
    index = CapacityIndex(fleet + fleet_extra, workload=profile)
    assert decide(index, PodRequest(65_000, 1, 0), "thaw").node == node_name


@pytest.mark.parametrize(
    ("growth_a", "growth_b", "whole_gpu_equal", "share_equal"),
    [
        (20, 60, True, False),     # tens of milli: they decide a share's GPU, not a whole GPU's
        (0, 300, False, False),
        (5000, 9000, True, True),  # the sigmoid saturates: best-fit decides between these
    ],
)
def test_thaw_compares_shares_on_finer_levels_than_whole_gpus(
        growth_a, growth_b, whole_gpu_equal, share_equal):
    from placement.engine.policies import thaw
    assert (thaw._level(growth_a) == thaw._level(growth_b)) is whole_gpu_equal
    assert (thaw._share_level(growth_a) == thaw._share_level(growth_b)) is share_equal


WHOLE_NODE_POD = PodRequest(80_000, 1, 8)


@pytest.mark.parametrize(
    ("per_gpu", "node_name"),
    [
        # popularity per GPU (Thaw): the pod's 20 cores on "open" leave CPU for 4 of its 6
        # free GPUs (growth 951 milli), more than opening "free" costs (171)
        (True, "free"),
        # full popularity (FGD's weights): opening "free" to 8-GPU pods costs 1,167, more
        # than the CPU the pod strands on "open" (667)
        (False, "open"),
    ],
)
def test_thaw_weighs_whole_node_shapes_per_gpu_when_it_opens_a_node(
        monkeypatch, per_gpu, node_name):
    from placement.engine.policies import thaw
    monkeypatch.setattr(thaw, "PER_GPU_WEIGHTS", per_gpu)
    fleet = [node("open", 8, cpu=60_000, mem=PLENTY, milli_used=(1000,)),
             node("free", 8, cpu=100_000, mem=PLENTY)]
    profile = WorkloadProfile.from_requests([GPU_POD] * 10 + [WHOLE_NODE_POD] * 2)
    cpu_hungry = PodRequest(20_000, 1, 1)
    assert decide(CapacityIndex(fleet, workload=profile), cpu_hungry, "thaw").node == node_name
