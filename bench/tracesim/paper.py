"""The paper's published results (`fgd_paper_allocation_results.csv`): mean over seeds."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

PAPER_POLICIES = {"Random": "01-Random", "DotProd": "02-DotProd",
                  "GpuClustering": "03-GpuClustering", "GpuPacking": "04-GpuPacking",
                  "BestFit": "05-BestFit", "FGD": "06-FGD"}
OURS_TO_PAPER = {"best-fit": "BestFit", "packing": "GpuPacking", "fgd": "FGD"}


def paper_means(path: Path, level: int = 130, seeds: set[int] | None = None
                ) -> dict[tuple[str, str], float]:
    """(trace, paper policy) -> mean allocation % at `level` over `seeds` (all if None)."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if seeds is not None and int(row["seed"]) not in seeds:
                continue
            value = row.get(str(level))
            if not value:
                continue
            trace = row["workload"].removeprefix("openb_pod_list_")
            policy = row["sc_policy"].split("-", 1)[1]
            sums[(trace, policy)].append(float(value))
    return {k: sum(v) / len(v) for k, v in sums.items()}
