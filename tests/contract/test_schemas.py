"""The bus contract: samples of every message of every version still decode; edges are strict,
the bus is tolerant."""

import json
from pathlib import Path

import msgspec
import pytest

from bus_schemas.calls import AsyncCall, CallRecord, DeadCall
from bus_schemas.codec import DecodeError, decode
from bus_schemas.functions import FunctionSpec
from bus_schemas.functions_events import FunctionDeleted, FunctionDeployed, FunctionEvent
from bus_schemas.leases import LeaseRequested
from bus_schemas.nodes import NodeCapacity, NodeHeartbeat
from bus_schemas.pods import PlacementMessage, PodAssigned, PodStateChanged, PodStop
from bus_schemas.codec import encode
from bus_schemas.snapshots import (SnapshotPing, SnapshotPong, SnapshotReady, SnapshotRequested, SnapshotRestore,
                                   SnapshotRestored)
from bus_schemas.version import SCHEMA_VERSION

SAMPLES = Path(__file__).parent / "samples"
TYPES = {
    "function_spec": FunctionSpec, "fn_deployed": FunctionEvent, "fn_deleted": FunctionEvent,
    "pod_assigned": PlacementMessage, "pod_stop": PlacementMessage, "pod_state_changed": PodStateChanged,
    "node_capacity": NodeCapacity, "node_heartbeat": NodeHeartbeat, "lease_requested": LeaseRequested,
    "snapshot_requested": SnapshotRequested, "snapshot_ready": SnapshotReady,
    "snapshot_restore": SnapshotRestore, "snapshot_restored": SnapshotRestored,
    "snapshot_ping": SnapshotPing, "snapshot_pong": SnapshotPong,
    "async_call": AsyncCall, "call_record": CallRecord, "dead_call": DeadCall,
}
EXPECTED = {"fn_deployed": FunctionDeployed, "fn_deleted": FunctionDeleted, "pod_assigned": PodAssigned,
            "pod_stop": PodStop}


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("v*/*.json")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recorded_sample_still_decodes(path):
    msg = decode(path.read_bytes(), TYPES[path.stem])
    assert isinstance(msg, EXPECTED.get(path.stem, TYPES[path.stem]))
    assert msg.v <= SCHEMA_VERSION


def test_every_message_type_has_a_sample_of_the_current_version():
    assert {p.stem for p in (SAMPLES / f"v{SCHEMA_VERSION}").glob("*.json")} == set(TYPES)


def test_a_node_capacity_from_before_degraded_decodes_as_healthy():
    body = json.loads((SAMPLES / "v1" / "node_capacity.json").read_text())
    assert "degraded" not in body, "this sample was recorded before the field existed: keep it so"
    assert decode(json.dumps(body), NodeCapacity).degraded == ""


def test_a_degraded_node_capacity_round_trips_its_reason():
    cap = decode((SAMPLES / "v1" / "node_capacity.json").read_bytes(), NodeCapacity)
    reason = "snapshotter not answering on snapshot.ping.node-a for 3.0s: pods cold-start until it is back"
    degraded = decode(encode(msgspec.structs.replace(cap, degraded=reason)), NodeCapacity)
    assert degraded.degraded == reason and degraded.v == SCHEMA_VERSION


def test_client_input_with_an_unknown_field_is_refused_naming_it():
    body = json.loads((SAMPLES / "v1" / "function_spec.json").read_text())
    body["scaling"]["max_pod"] = 3
    with pytest.raises(DecodeError) as err:
        decode(json.dumps(body), FunctionSpec)
    assert err.value.field == "$.scaling.max_pod"
    assert "unknown field" in err.value.reason


def test_events_between_components_tolerate_fields_from_a_newer_producer():
    body = json.loads((SAMPLES / "v1" / "node_heartbeat.json").read_text())
    body["added_in_v2"] = {"anything": True}
    assert decode(json.dumps(body), NodeHeartbeat).node == "node-a"


def test_a_wrong_type_names_the_field_and_the_expected_type():
    with pytest.raises(DecodeError) as err:
        decode(b'{"fn": "echo", "want_pods": "two", "gateway": "g", "at_ms": 1}', LeaseRequested)
    assert err.value.field == "$.want_pods" and "int" in err.value.reason


def test_garbage_is_a_decode_error_not_a_crash():
    for data in (b"", b"\xff\xfe", b"[]", b"null", b"{" * 10000):
        with pytest.raises(DecodeError):
            decode(data, NodeCapacity)
