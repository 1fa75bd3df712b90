"""Short trace replays (`bench.trace_replay`) on the Alibaba GPU-sharing trace.

They need the trace (`shared/data/gpu-sharing-trace/`, beside the checkout) and skip, saying
so, where it is absent.
"""
from __future__ import annotations

import random

import pytest

from bench import trace_replay
from bench.tracesim.arrival import arrival_sequence
from bench.tracesim.replay import replay
from bench.tracesim.trace import DATA_DIR, NODE_FILE, load_nodes, load_pods, trace_file
from placement.engine import WorkloadProfile

pytestmark = pytest.mark.skipif(not (DATA_DIR / NODE_FILE).exists(),
                                reason=f"the GPU-sharing trace is not at {DATA_DIR}")

TOLERANCE = 0.05
"""Points a decile may fall short of FGD's (as in `bench.tracesim.report`)."""


def test_thaw_places_as_much_as_fgd_at_every_decile_up_to_90_percent_of_multigpu50():
    # Seed 1 is a tuning seed.  Before the fix Thaw gave the only nodes that can hold the
    # trace's 120-core 8-GPU pods (39 of 1,213) to CPU-hungry pods that fit elsewhere, then
    # turned those 8-GPU pods away from 55% arrived on: 1.7 points behind FGD at 90%.
    nodes = load_nodes(DATA_DIR)
    pods = load_pods(trace_file(DATA_DIR, "multigpu50"))
    profile = WorkloadProfile.from_requests(p.request for p in pods)
    capacity = sum(len(n.gpus) for n in nodes) * 1000
    requests = arrival_sequence(pods, capacity, 90, random.Random(1))
    thaw = replay(nodes, requests, "thaw", profile, None)
    fgd = replay(nodes, requests, "fgd", profile, None)
    behind = {lv: round(fgd.levels[lv] - thaw.levels[lv], 2) for lv in range(10, 91, 10)}
    short = {lv: points for lv, points in behind.items() if points > TOLERANCE}
    assert not short, f"points Thaw is behind FGD, by arrived %: {short}"


def test_plot_draws_one_figure_per_trace_and_a_grid(tmp_path, capsys):
    trace_replay.main(["--trace", "multigpu50,default", "--policy", "thaw,fgd", "--seeds", "1",
                       "--arrival", "15", "--plot", str(tmp_path)])
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["default.png", "grid.png", "multigpu50.png"]
    for name in written:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    out = capsys.readouterr().out
    assert "speed ratio thaw / fgd" in out and "fgd worst" in out
