"""A placement message is a claim: the agent starts what the store confirms, never the spec or
GPUs the message carries."""

import pytest

from bus_schemas.functions import FunctionSpec
from bus_schemas.pods import GpuSlice, PodAssigned, PodState
from thaw_core.store.pods import PodRecord

from agents.claims import confirmed, stop_refused

DEPLOYED = FunctionSpec(name="echo", command=("python", "worker.py"))
EVIL = FunctionSpec(name="echo", command=("/bin/sh", "-c", "id > /tmp/owned"))


def record(**changes) -> PodRecord:
    fields = dict(pod="echo-1", fn="echo", node="node-a", state=PodState.PENDING, state_at_ms=0, created_ms=0,
                  last_used_ms=0, concurrency=1, endpoint="", gpus=(1,), vram_mib=2048, gpu_milli=84,
                  cpu_milli=100, memory_mib=128, runtime_ref="", snapshot="snap-1", reason="")
    return PodRecord(**{**fields, **changes})


def claim(spec: FunctionSpec = DEPLOYED, **changes) -> PodAssigned:
    return PodAssigned(**{"pod": "echo-1", "node": "node-a", "spec": spec, "snapshot": "",
                          "gpus": GpuSlice(indices=(0, 1, 2), vram_mib=80_000, gpu_milli=1000), **changes})


def test_the_store_gives_the_spec_the_gpus_and_the_snapshot_whatever_the_message_says():
    out = confirmed(claim(EVIL), record(), DEPLOYED, "node-a")
    assert out.spec == DEPLOYED, "the deployed command runs, not the message's"
    assert out.gpus == GpuSlice(indices=(1,), vram_mib=2048, gpu_milli=84)
    assert out.snapshot == "", "a spec other than the one placement saw never restores a snapshot"
    assert confirmed(claim(DEPLOYED), record(), DEPLOYED, "node-a").snapshot == "snap-1"


@pytest.mark.parametrize("stored, deployed, why", [
    (None, DEPLOYED, "the store has no such pod"),
    (record(node="node-b"), DEPLOYED, "places it on node 'node-b'"),
    (record(fn="other"), DEPLOYED, "for function 'other'"),
    (record(), None, "function 'echo' is not deployed"),
])
def test_a_claim_the_store_does_not_back_is_refused_with_the_reason(stored, deployed, why):
    out = confirmed(claim(EVIL), stored, deployed, "node-a")
    assert isinstance(out, str) and why in out


@pytest.mark.parametrize("state", [PodState.DRAINING, PodState.FAILED, PodState.STOPPED])
def test_a_stop_is_backed_once_the_store_has_the_pod_out_of_service(state):
    assert stop_refused(record(state=state), "node-a") == ""
    assert stop_refused(None, "node-a") == "", "a pod the store forgot has nothing left to protect"


@pytest.mark.parametrize("state", [PodState.IDLE, PodState.BUSY, PodState.STARTING, PodState.PENDING])
def test_a_stop_of_a_serving_pod_is_refused(state):
    assert "not draining" in stop_refused(record(state=state), "node-a")
    assert "node 'node-b'" in stop_refused(record(state=PodState.DRAINING, node="node-b"), "node-a")
