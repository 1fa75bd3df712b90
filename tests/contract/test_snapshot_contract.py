"""Snapshot fields added to v1 messages: old samples decode with the defaults, and a snapshot is
tied to the parts of a spec that shape a worker's memory, not to its scaling."""

import json
from pathlib import Path

import msgspec
import pytest

from bus_schemas import streams, subjects
from bus_schemas.codec import decode
from bus_schemas.functions import FunctionSpec, Resources, Scaling, spec_digest
from bus_schemas.snapshots import SnapshotRequested

SAMPLES = Path(__file__).parent / "samples" / "v1"
BASE = FunctionSpec(name="echo", command=("python", "worker.py"), env={"A": "1", "B": "2"})


def test_a_spec_recorded_before_the_snapshot_field_decodes_with_snapshots_on():
    body = json.loads((SAMPLES / "function_spec.json").read_text())
    assert "snapshot" not in body
    assert decode(json.dumps(body), FunctionSpec).snapshot is True


def test_a_request_recorded_before_spec_digests_decodes_with_an_empty_digest():
    assert decode((SAMPLES / "snapshot_requested.json").read_bytes(), SnapshotRequested).spec_digest == ""


@pytest.mark.parametrize("change, same", [
    ({"scaling": Scaling(max_pods=9, idle_timeout_s=5)}, True),
    ({"snapshot": False}, True),
    ({"env": {"B": "2", "A": "1"}}, True),  # order of env entries does not matter
    ({"env": {"A": "1", "B": "3"}}, False),
    ({"command": ("python", "other.py")}, False),
    ({"resources": Resources(memory_mib=1024)}, False),
])
def test_spec_digest_changes_exactly_when_a_workers_memory_could(change, same):
    assert (spec_digest(msgspec.structs.replace(BASE, **change)) == spec_digest(BASE)) is same


def test_the_snapshots_stream_does_not_capture_restore_requests():
    # A stream on snapshot.> would answer every core restore request with a publish ack.
    restore = subjects.snapshot_restore("node-a")
    assert not any(_matches(pattern, restore) for pattern in streams.SNAPSHOTS.subjects)
    assert any(_matches(p, subjects.snapshot_requested("echo")) for p in streams.SNAPSHOTS.subjects)
    assert any(_matches(p, subjects.snapshot_ready("echo")) for p in streams.SNAPSHOTS.subjects)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    if p[-1] == ">":
        return len(s) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], s))
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s))
