"""What the gateway's REST API answers, typed: the SDK's return values.

These are HTTP response types, not bus messages (those are in bus_schemas). They decode
tolerantly: a field the gateway adds later is ignored, one it leaves out takes its default, so
an SDK a version apart still reads the answers.
"""

import base64
import json as _json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from msgspec import Struct
from msgspec import field as _field

PodState = Literal["pending", "starting", "restoring", "standby", "idle", "busy", "draining", "stopped", "failed"]
STARTING_STATES = frozenset({"pending", "starting", "restoring", "standby"})
SERVING_STATES = frozenset({"idle", "busy"})
Served = Literal["warm", "restored", "cold"]


class Resources(Struct, frozen=True, kw_only=True):
    vram_mib: int = 0  # per GPU
    gpu_count: int = 1
    gpu_models: tuple[str, ...] = ()
    cpu_milli: int = 500
    memory_mib: int = 512
    pids: int = 4096


class Scaling(Struct, frozen=True, kw_only=True):
    min_pods: int = 0
    max_pods: int = 1
    concurrency: int = 1
    idle_timeout_s: float = 60.0
    start_timeout_s: float = 120.0
    max_queue: int = 256


class AsyncPolicy(Struct, frozen=True, kw_only=True):
    max_attempts: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0


class SnapshotFailure(Struct, frozen=True, kw_only=True):
    """Why a function's last snapshot failed (the snapshotter's error, when at_ms)."""

    error: str
    at_ms: int


class Function(Struct, frozen=True, kw_only=True):
    """A deployed function as the gateway lists it: its spec, `status` ("ok" or "degraded") and
    why it is degraded (a crash loop; a degraded node where its pods would restore); read alone
    (`Client.function`), also why its last snapshot failed, if it did since its last snapshot."""

    name: str
    tenant: str = "default"
    command: tuple[str, ...] = ()
    image: str = ""
    port: int = 0
    health_path: str = "/healthz"
    invoke_path: str = "/"
    env: dict[str, str] = {}
    resources: Resources = Resources()
    scaling: Scaling = Scaling()
    placement_policy: str = "thaw"
    snapshot: bool = True
    restore: str = "auto"
    async_: AsyncPolicy = _field(default_factory=AsyncPolicy, name="async")
    status: str = "ok"
    degraded_reason: str = ""
    snapshot_failure: SnapshotFailure | None = None


class Deployment(Struct, frozen=True, kw_only=True):
    """POST /v1/functions: the function as stored (with your tenant) and its revision."""

    function: Function
    revision: int


class Pod(Struct, frozen=True, kw_only=True):
    """A pod (a worker) of one of your functions. `snapshot`: what it was restored from ("" for a
    cold start); `reason`: why it stopped or failed."""

    pod: str
    fn: str
    node: str = ""
    state: str = "pending"  # a PodState
    state_at_ms: int = 0
    created_ms: int = 0
    last_used_ms: int = 0
    concurrency: int = 1
    endpoint: str = ""
    gpus: tuple[int, ...] = ()
    vram_mib: int = 0
    gpu_milli: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    runtime_ref: str = ""
    snapshot: str = ""
    reason: str = ""


class PodList(Struct, frozen=True, kw_only=True):
    """GET /v1/pods: your live pods, and those that failed in the last 15 minutes (with why)."""

    pods: list[Pod] = []
    failed: list[Pod] = []


class Gpu(Struct, frozen=True, kw_only=True):
    index: int
    model: str = ""
    vram_mib: int = 0
    vram_reserved_mib: int = 0
    milli_reserved: int = 0


class Node(Struct, frozen=True, kw_only=True):
    name: str
    cpu_milli: int = 0
    cpu_reserved: int = 0
    memory_mib: int = 0
    memory_reserved: int = 0
    heartbeat_ms: int = 0
    gpu_source: str = ""
    gpus: tuple[Gpu, ...] = ()
    status: str = "ok"  # "ok", "degraded", or "draining" (`thaw drain`)
    degraded_reason: str = ""
    draining: bool = False  # takes no new pod; its pods are being handed over to other nodes
    drain_waiting: str = ""  # while draining: why some of its pods cannot leave yet
    pods: int = 0  # live pods on it, every tenant's


class Snapshot(Struct, frozen=True, kw_only=True):
    id: str
    fn: str
    node: str = ""  # where it was taken
    runtime: str = "process"
    created_ms: int = 0
    size_bytes: int = 0  # compressed
    raw_bytes: int = 0
    tiers: tuple[str, ...] = ()  # nearest first
    port: int = 0
    spec_digest: str = ""
    arch: str = ""
    gpu: bool = False


class Call(Struct, frozen=True, kw_only=True):
    """An async call. `result` is the worker's answer as text, or base64 (`result_encoding`);
    `result_bytes()` gives the bytes. A dead call (from `list_calls(state="dead")`) carries
    `reason` and `died_ms` instead of a result."""

    call_id: str
    fn: str
    status: str  # queued, running, succeeded, failed, dead
    attempts: int = 0
    http_status: int = 0
    content_type: str = ""
    error: str = ""
    queued_ms: int = 0
    started_ms: int = 0
    finished_ms: int = 0
    updated_ms: int = 0
    redrives: int = 0
    result: str | None = None
    result_encoding: str = "none"  # text, base64 or none
    reason: str = ""
    died_ms: int = 0

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed", "dead")

    def result_bytes(self) -> bytes:
        if self.result is None:
            return b""
        return base64.b64decode(self.result) if self.result_encoding == "base64" else self.result.encode()


class DeadCall(Struct, frozen=True, kw_only=True):
    """A call in the dead-letter queue: it used up its attempts; `reason` says how the last went."""

    call_id: str
    fn: str
    status: str = "dead"
    attempts: int = 0
    http_status: int = 0
    reason: str = ""
    died_ms: int = 0
    queued_ms: int = 0
    redrives: int = 0


class Redriven(Struct, frozen=True, kw_only=True):
    redriven: list[str] = []
    not_found: list[str] = []


class LogChunk(Struct, frozen=True, kw_only=True):
    """A piece of a worker's log, bytes [offset, next_offset) of `size` so far. `shared_with`: the
    pod whose log a restored pod shares (its snapshot's source), else ""."""

    pod: str
    node: str = ""
    state: str = ""
    offset: int = 0
    next_offset: int = 0
    size: int = 0
    shared_with: str = ""
    text: str = ""


class ApiKey(Struct, frozen=True, kw_only=True):
    """POST /v1/keys: a new key, shown once."""

    key: str
    tenant: str
    role: str
    rate_per_s: float = 0.0


class Queued(Struct, frozen=True, kw_only=True):
    call_id: str
    status: str = "queued"


class FunctionsList(Struct, frozen=True):
    functions: list[Function] = []


class FunctionOne(Struct, frozen=True):
    function: Function


class Drain(Struct, frozen=True, kw_only=True):
    """POST / DELETE /v1/nodes/<node>/drain: the node, whether it now drains, pods still on it."""

    node: str
    draining: bool = False
    pods: int = 0


class NodesList(Struct, frozen=True):
    nodes: list[Node] = []


class SnapshotsList(Struct, frozen=True):
    snapshots: list[Snapshot] = []


class CallsList(Struct, frozen=True):
    calls: list[Call] = []


class DeadList(Struct, frozen=True):
    dead: list[DeadCall] = []


class Deleted(Struct, frozen=True):
    deleted: str = ""


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """A worker's answer to a synchronous invoke, whatever its status (a refusal by the gateway
    itself raises ThawError instead). `pod`: the pod that answered. `served`: how it was
    served ("warm", "restored" or "cold") when the gateway says so (a `Thaw-Start` header),
    else None. `headers`: lower-case names."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    pod: str = ""
    served: Served | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return _json.loads(self.body)
