"""The placement decision: a request and a capacity snapshot in, `Placed` or `Unplaceable` out.

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

__all__ = ["ALIASES", "POLICIES", "decide"]


def decide(index: CapacityIndex, request: PodRequest, policy_name: str = "thaw",
           rng: random.Random | None = None) -> Decision:
    """Where `request` should go under policy `policy_name` (ValueError if unknown).

    `rng`, when given, breaks ties between equally good nodes at random; otherwise the node
    listed first wins, so the same snapshot and request always give the same decision.
    """
    choose = policy(policy_name)
    placed = choose(index, request, rng)
    if placed is None:
        return Unplaceable(unplaceable_reasons(index, request))
    return placed


def place(index: CapacityIndex, request: PodRequest, policy_name: str = "thaw",
          rng: random.Random | None = None) -> Decision:
    """`decide`, then reserve what was decided on the index (for simulations and tests)."""
    decision = decide(index, request, policy_name, rng)
    if isinstance(decision, Placed):
        index.reserve(decision, request)
    return decision
