"""Synthetic fleets with the trace's node mix, for decisions-per-second at scale."""
from __future__ import annotations

import random
from dataclasses import replace

from placement.engine.model import NodeView


def scaled_fleet(nodes: list[NodeView], size: int, seed: int = 0) -> list[NodeView]:
    """`size` nodes with the same mix as `nodes`: whole copies, then a seeded sample.

    Names get a copy suffix so they stay unique; order is copy by copy, as listed.
    """
    copies, rest = divmod(size, len(nodes))
    out = [replace(n, name=f"{n.name}-{c}") for c in range(copies) for n in nodes]
    sample = random.Random(seed).sample(nodes, rest)
    out.extend(replace(n, name=f"{n.name}-{copies}") for n in sample)
    return out
