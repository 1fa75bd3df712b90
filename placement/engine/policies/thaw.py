"""Thaw's policy: FGD's fragmentation measure first, best-fit among near-equals, ranked fast.

What it does, for each node state (group) that passes the filters:
1. *Fragmentation growth*, as FGD measures it (`fragmentation.py`), but counting memory as
   well as CPU when asking whether an expected request could still land on the node (FGD
   ignores memory, so it cannot see GPUs stranded by a node's full memory).  The growth is
   mapped through FGD's sigmoid onto `BINS` integer levels, so growths within a few tens of
   milli count as equal: the measure is an expectation over a noisy workload mix, and
   splitting hairs on it only adds noise.
2. Among equals, *best fit*: the least GPU left on the node afterwards (over the fleet's
   largest node), plus, for CPU-only and whole-GPU requests, the least CPU.  FGD breaks these
   ties by node name, which packs only by accident of naming; packing on purpose keeps whole
   nodes and GPUs free for large requests and keeps CPU-only work off nodes whose GPUs still
   need CPU.  Shares ignore CPU here: they should complete a partly used GPU.
3. Then the tightest GPU, then the lowest node ordinal.
Tuned on seeds 43-44 of a few traces (default, cpu050, cpu200, gpushare100, multigpu50);
reported on seeds 42-51 of all 17 (bench/trace_replay.py).

Why it is fast: every criterion depends only on a group's exact state, so `ranking.py` keeps,
per request shape, a heap of groups that is caught up from the groups created since it last
looked, instead of scoring the fleet on every decision.
"""
from __future__ import annotations

import math
import random

from placement.engine import scores
from placement.engine.filters import distinct_choices
from placement.engine.index import CapacityIndex, Group
from placement.engine.model import Placed, PodRequest
from placement.engine.policies.profile import frag_table
from placement.engine.ranking import best_group
from placement.engine.search import placement

BINS = 50
"""Levels for fragmentation growth (FGD uses 100; 50 values best-fit more, see above)."""
USE_MEMORY = True
"""Count a node's free memory in fragmentation, not only its CPU (FGD: CPU only)."""
LEFT_CPU = 1.0
"""Weight of leftover CPU in best-fit, for CPU-only and whole-GPU requests."""
SHARE_LEFT_CPU = 0.0
"""... and for GPU shares: none, a share should complete a GPU wherever its CPU is."""


def choose(index: CapacityIndex, request: PodRequest,
           rng: random.Random | None = None) -> Placed | None:
    """Thaw placement (see module docstring); deterministic, `rng` is ignored."""
    table = frag_table(index, request, use_memory=USE_MEMORY)
    max_cpu, max_gpu = index.max_cpu_milli, index.max_gpu_milli
    cpu_weight = SHARE_LEFT_CPU if request.gpu_count and not request.is_whole_gpu else LEFT_CPU

    def score(group: Group) -> tuple[tuple, tuple[int, ...]]:
        node = group.members[0]
        left = ((group.gpu_milli_free - request.gpu_milli_total) / max_gpu
                + cpu_weight * (node.cpu_free - request.cpu_milli) / max_cpu)
        best = None
        for gpus in distinct_choices(group, request):
            delta = scores.frag_delta(table, group, node, gpus, request)
            key = (_level(delta, BINS), left, sum(group.milli_free[i] for i in gpus))
            if best is None or key < best[0]:
                best = (key, gpus)
        return best

    found = best_group(index, "thaw", request, score)
    if found is None:
        return None
    group, gpus = found
    return placement(group.members[0], gpus, request)


def _level(delta: float, bins: int) -> int:
    """Minus FGD's sigmoid score of a fragmentation growth, on `bins` levels (lower is better)."""
    x = -delta / 1000
    return -int(bins / (1.0 + math.exp(-x))) if x > -700 else 0
