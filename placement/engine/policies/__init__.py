"""Placement policies, selectable by name (per function, per deployment).

Every policy returns the `Placed` it prefers among nodes that pass all filters, or None when
none does; `decide` turns None into `Unplaceable` with the filters' reasons.  An optional
`rng` makes ties random; without it ties go to the node listed first (as the FGD paper's
simulator does), so decisions are reproducible.

| name | idea | module |
| --- | --- | --- |
| first-fit | first node, in fleet order, that fits (what InferX ships) | `first_fit` |
| best-fit (alias binpack) | the node left with least CPU and GPU | `best_fit` |
| packing | fill shared GPUs, then used nodes, then small free nodes | `packing` |
| fgd | least growth of fragmentation w.r.t. the expected workload (ATC'23) | `fgd` |
| thaw | FGD's measure plus GPU stranded by CPU/memory, multi-GPU shapes weighed per GPU and every shape by its supply, rare large nodes opened last, best-fit among equals; ranked incrementally | `thaw` |
"""
from __future__ import annotations

import random
from collections.abc import Callable

from placement.engine.index import CapacityIndex
from placement.engine.model import Placed, PodRequest
from placement.engine.policies import best_fit, fgd, first_fit, packing, thaw

Choose = Callable[[CapacityIndex, PodRequest, "random.Random | None"], "Placed | None"]

REGISTRY: dict[str, Choose] = {
    "first-fit": first_fit.choose,
    "best-fit": best_fit.choose,
    "packing": packing.choose,
    "fgd": fgd.choose,
    "thaw": thaw.choose,
}
ALIASES = {"binpack": "best-fit"}

POLICIES: tuple[str, ...] = tuple(REGISTRY)


def policy(name: str) -> Choose:
    """The policy called `name` (or an alias); ValueError naming the known ones otherwise."""
    found = REGISTRY.get(ALIASES.get(name, name))
    if found is None:
        known = ", ".join(list(REGISTRY) + list(ALIASES))
        raise ValueError(f"unknown placement policy {name!r}; known: {known}")
    return found
