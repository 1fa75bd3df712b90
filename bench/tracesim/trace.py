"""Reading the Alibaba GPU-sharing trace (`shared/data/gpu-sharing-trace/`) into engine types.

The trace gives nodes as (CPU milli, memory MiB, GPU count, GPU model) and pods as (CPU milli,
memory MiB, GPU count, milli per GPU, allowed models).  GPU memory is not in the trace; each
model gets its nominal size (undisclosed models G1-G3 are given 32 GiB) so that vRAM, charged
in proportion to milli, never binds before milli does - as in the paper.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from placement.engine.model import GpuView, NodeView, PodRequest

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "gpu-sharing-trace"
NODE_FILE = "openb_node_list_gpu_node.csv"
PAPER_FILE = "fgd_paper_allocation_results.csv"

VRAM_MIB = {"T4": 15_360, "P100": 16_384, "V100M16": 16_384, "V100M32": 32_768,
            "A10": 24_576, "G1": 32_768, "G2": 32_768, "G3": 32_768}
DEFAULT_VRAM_MIB = 16_384

TRACES = ("default", "cpu050", "cpu100", "cpu200", "cpu250", "gpushare40", "gpushare60",
          "gpushare80", "gpushare100", "gpuspec10", "gpuspec20", "gpuspec25", "gpuspec33",
          "multigpu20", "multigpu30", "multigpu40", "multigpu50")
"""The 17 traces the paper reports (README table), in its order."""


@dataclass(frozen=True, slots=True)
class TracePod:
    """One pod of a trace: its name (the simulator orders by it) and its request."""

    name: str
    request: PodRequest


def data_dir(override: str | None = None) -> Path:
    return Path(override) if override else DATA_DIR


def load_nodes(directory: Path, file: str = NODE_FILE) -> list[NodeView]:
    """The trace's nodes as empty `NodeView`s, in file order."""
    nodes = []
    with open(directory / file, newline="") as f:
        for row in csv.DictReader(f):
            model, count = row["model"], int(row["gpu"])
            vram = VRAM_MIB.get(model, DEFAULT_VRAM_MIB)
            gpus = tuple(GpuView(i, model, vram) for i in range(count))
            nodes.append(NodeView(row["sn"], int(row["cpu_milli"]), 0,
                                  int(row["memory_mib"]), 0, gpus))
    return nodes


def trace_file(directory: Path, trace: str) -> Path:
    """The pod file of `trace` ("default", "cpu050", ... or a path to a CSV)."""
    path = Path(trace)
    if path.suffix == ".csv":
        return path
    return directory / f"openb_pod_list_{trace}.csv"


def load_pods(path: Path) -> list[TracePod]:
    """The pods of a trace file.  A GPU share above 1000 milli is capped at one GPU, and a
    GPU pod with no milli counts as CPU-only, as the simulator's conversion does."""
    pods = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            count, milli = int(row["num_gpu"]), int(row["gpu_milli"])
            milli = min(milli, 1000)
            if milli <= 0:
                count = 0
            models = frozenset(m for m in (row.get("gpu_spec") or "").split("|") if m)
            cpu = int(row["cpu_milli"]) or 100  # Kubernetes' non-zero default request
            request = PodRequest(cpu_milli=cpu, memory_mib=int(row["memory_mib"]),
                                 gpu_count=count, gpu_milli=milli if count else 0,
                                 gpu_models=models if count else frozenset())
            pods.append(TracePod(row["name"], request))
    return pods
