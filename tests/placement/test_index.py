"""The capacity index: reserve and release are exact and refuse to over-commit."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placement.engine import POLICIES, CapacityIndex, Placed, PodRequest, decide
from tests.placement.conftest import node


def test_reserve_then_release_restores_the_view():
    ix = CapacityIndex([node("a", 2, milli_used=(250,), cpu_used=1000)])
    before = ix.nodes()
    request = PodRequest(2000, 4096, 1, gpu_milli=500)
    placed = decide(ix, request, "best-fit")
    ix.reserve(placed, request)
    assert ix.node("a") != before[0]
    ix.release(placed, request)
    assert ix.nodes() == before


def test_reserve_refuses_to_overcommit_and_changes_nothing():
    ix = CapacityIndex([node("a", 1, milli_used=(800,))])
    before = ix.nodes()
    with pytest.raises(ValueError):
        ix.reserve(Placed("a", (0,), 500, 100), PodRequest(1000, 1024, 1, gpu_milli=500))
    assert ix.nodes() == before


def test_release_refuses_what_was_never_reserved():
    ix = CapacityIndex([node("a", 1)])
    with pytest.raises(ValueError):
        ix.release(Placed("a", (0,), 500, 100), PodRequest(1000, 1024, 1, gpu_milli=500))


requests = st.one_of(
    st.builds(PodRequest, cpu_milli=st.integers(0, 20_000), memory_mib=st.integers(0, 40_000),
              gpu_count=st.just(0)),
    st.builds(PodRequest, cpu_milli=st.integers(0, 20_000), memory_mib=st.integers(0, 40_000),
              gpu_count=st.just(1), gpu_milli=st.integers(1, 1000),
              vram_mib=st.integers(0, 20_000),
              gpu_models=st.sampled_from([frozenset(), frozenset({"T4"}), frozenset({"A10"})])),
    st.builds(PodRequest, cpu_milli=st.integers(0, 20_000), memory_mib=st.integers(0, 40_000),
              gpu_count=st.integers(1, 4), vram_mib=st.just(0)),
)
fleets = st.lists(
    st.builds(node, name=st.just(""), gpus=st.integers(0, 4), model=st.sampled_from(["T4", "A10"]),
              cpu=st.integers(1000, 64_000), mem=st.integers(1024, 131_072),
              vram=st.sampled_from([15_360, 24_576])),
    min_size=1, max_size=6,
).map(lambda ns: [n.__class__(f"n{i}", *[getattr(n, f) for f in
                                         ("cpu_milli", "cpu_used_milli", "memory_mib",
                                          "memory_used_mib", "gpus")]) for i, n in enumerate(ns)])


def _within_capacity(ix: CapacityIndex) -> bool:
    return all(
        0 <= v.cpu_used_milli <= v.cpu_milli and 0 <= v.memory_used_mib <= v.memory_mib
        and all(0 <= g.milli_used <= 1000 and 0 <= g.vram_used_mib <= g.vram_mib for g in v.gpus)
        for v in ix.nodes())


@settings(max_examples=60, deadline=None)
@given(fleet=fleets, seq=st.lists(requests, max_size=25), policy=st.sampled_from(POLICIES))
def test_placements_never_overcommit_gpu_cpu_or_memory(fleet, seq, policy):
    ix = CapacityIndex(fleet)
    for request in seq:
        decision = decide(ix, request, policy)
        if isinstance(decision, Placed):
            ix.reserve(decision, request)  # raises if the decision over-commits
        assert _within_capacity(ix)


@settings(max_examples=60, deadline=None)
@given(fleet=fleets, seq=st.lists(requests, max_size=25), policy=st.sampled_from(POLICIES))
def test_releasing_everything_restores_the_view_exactly(fleet, seq, policy):
    ix = CapacityIndex(fleet)
    before = ix.nodes()
    held = []
    for request in seq:
        decision = decide(ix, request, policy)
        if isinstance(decision, Placed):
            ix.reserve(decision, request)
            held.append((decision, request))
    for decision, request in reversed(held):
        ix.release(decision, request)
    assert ix.nodes() == before


@settings(max_examples=40, deadline=None)
@given(fleet=fleets, seq=st.lists(requests, min_size=1, max_size=25))
def test_thaw_reasons_match_a_full_examination_of_the_fleet(fleet, seq):
    from placement.engine.filters import unplaceable_reasons
    from placement.engine import Unplaceable
    ix = CapacityIndex(fleet)
    for request in seq:
        decision = decide(ix, request, "thaw")
        if isinstance(decision, Placed):
            ix.reserve(decision, request)
        else:
            assert isinstance(decision, Unplaceable)
            assert decision.reasons == unplaceable_reasons(ix, request)


def test_logs_are_trimmed_and_rankings_stay_correct(monkeypatch):
    from placement.engine import ranking
    monkeypatch.setattr(ranking, "_LOG_LIMIT", 20)
    ix = CapacityIndex([node(f"n{i}", 2, cpu=64_000, mem=1 << 20) for i in range(4)])
    share, cpu_only = PodRequest(1000, 1024, 1, gpu_milli=100), PodRequest(500, 512, 0)
    for _ in range(100):
        for request in (share, cpu_only):
            decision = decide(ix, request, "thaw")
            if isinstance(decision, Placed):
                ix.reserve(decision, request)
    assert len(ix.created) + len(ix.touched) <= 40
    assert sum(g.milli_used for v in ix.nodes() for g in v.gpus) == 8000  # 80 shares fit
