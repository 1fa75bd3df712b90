"""The fleet replay (bench/fleet_replay.py) on a slice of the trace: the real placement worker,
on real servers with the platform's users, behind simulated agents, with every request queued
in the stream before the worker takes the first (so placed in batches), allocates what the offline replay allocates, and answers every
request."""

import random

import pytest

from bench.fleet.run import run_once
from bench.fleet_replay import offline
from bench.tracesim.arrival import arrival_sequence
from bench.tracesim.trace import DATA_DIR, load_nodes, load_pods, trace_file

NODES = 40  # the trace's first 40 nodes (P100s, an 8-GPU node, T4s...): ~290 requests to 130%

pytestmark = pytest.mark.skipif(not (DATA_DIR / "openb_node_list_gpu_node.csv").exists(),
                                reason="the GPU-sharing trace is not in shared/data")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    nodes = load_nodes(DATA_DIR)[:NODES]
    pods = load_pods(trace_file(DATA_DIR, "default"))
    trace = [p.request for p in pods]
    requests = arrival_sequence(pods, sum(len(n.gpus) for n in nodes) * 1000, 130, random.Random(42))
    found = run_once(tmp_path_factory.mktemp("fleet"), nodes, requests, trace, "thaw", workers=1,
                     say=lambda _: None, queued=True)
    return found, offline(nodes, requests, trace, "thaw")


def test_one_worker_with_every_request_queued_at_once_allocates_what_the_offline_replay_allocates(replayed):
    found, expected = replayed
    assert found.profile_matches, "the workers measured against another workload than the offline replay"
    assert abs(found.final - expected.final) <= 0.2
    assert found.placed == expected.placed


def test_every_request_gets_a_pod_or_an_unplaceable_record(replayed):
    found, _ = replayed
    assert found.unanswered == []
    assert found.placed > 0 and found.placed < found.requests, "to 130% some fit and some do not"


def test_every_placed_pod_reaches_its_agent_and_becomes_idle(replayed):
    found, _ = replayed
    assert found.assigned == found.placed
    assert found.started == found.placed
