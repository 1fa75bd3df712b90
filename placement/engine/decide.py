"""The placement decision: a request and a capacity view in, `Placed` or `Unplaceable` out.

Pure: it reads the index and does no I/O; it does not reserve (the caller commits, then calls
`index.reserve`), though it may fill the index's memo tables.  Kubernetes-style: filters
(`filters.py`) say which nodes can hold the request, a policy (`policies/`) scores those and
picks one; if none passes, the filters' aggregated reasons say why.
"""
from __future__ import annotations

import random

from placement.engine.filters import unplaceable_reasons
from placement.engine.index import CapacityIndex
from placement.engine.model import Decision, Placed, PodRequest, Unplaceable
from placement.engine.policies import ALIASES, POLICIES, policy
from placement.engine.ranking import rejections

__all__ = ["ALIASES", "POLICIES", "decide"]


def decide(index: CapacityIndex, request: PodRequest, policy_name: str = "thaw",
           rng: random.Random | None = None) -> Decision:
    """Where `request` should go under policy `policy_name` (ValueError if unknown).

    `rng`, when given, breaks ties between equally good nodes at random; otherwise the node
    listed first wins, so the same view and request always give the same decision.
    """
    choose = policy(policy_name)
    placed = choose(index, request, rng)
    if placed is None:
        return _unplaceable(index, request, policy_name)
    return placed


def _unplaceable(index: CapacityIndex, request: PodRequest, policy_name: str) -> Unplaceable:
    """The reasons, reused while capacity is unchanged (failures come in runs on a full fleet)."""
    key = ("unplaceable", request)
    cached = index.memo.get(key)
    if cached is not None and cached[0] == index.version:
        reused: Unplaceable = cached[1]
        return reused
    counted = rejections(index, ALIASES.get(policy_name, policy_name), request)
    decision = Unplaceable(unplaceable_reasons(index, request, counted))
    index.memo[key] = (index.version, decision)
    return decision


def place(index: CapacityIndex, request: PodRequest, policy_name: str = "thaw",
          rng: random.Random | None = None) -> Decision:
    """`decide`, then reserve what was decided on the index (for simulations and tests)."""
    decision = decide(index, request, policy_name, rng)
    if isinstance(decision, Placed):
        index.reserve(decision, request)
    return decision
