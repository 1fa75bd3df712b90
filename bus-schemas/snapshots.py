"""Snapshot jobs, results, and the restore and ping request/replies (agent <-> its node's
snapshotter).

`SnapshotRequested` / `SnapshotReady` travel on the SNAPSHOTS stream; `SnapshotRestore` /
`SnapshotRestored` on core request/reply `snapshot.restore.<node>`, `SnapshotPing` /
`SnapshotPong` on core request/reply `snapshot.ping.<node>` (see subjects.py for why).
"""

from msgspec import Struct

from bus_schemas.functions import RestoreMode
from bus_schemas.version import SCHEMA_VERSION


class SnapshotRequested(Struct, frozen=True, kw_only=True):
    """Agent -> snapshotters: checkpoint this warm pod (the snapshotter of `node` acts)."""

    fn: str
    pod: str
    node: str
    at_ms: int
    spec_digest: str = ""  # functions.spec_digest of the spec the pod runs; a restore must match it
    v: int = SCHEMA_VERSION


class SnapshotReady(Struct, frozen=True, kw_only=True):
    fn: str
    snapshot: str
    node: str
    size_bytes: int
    tiers: tuple[str, ...]
    sha256: str
    at_ms: int
    pod: str = ""  # the pod it was taken from
    dump_s: float = 0.0  # wall time of checkpoint + store
    v: int = SCHEMA_VERSION


class SnapshotRestore(Struct, frozen=True, kw_only=True):
    """Agent -> its node's snapshotter: restore `snapshot` as the worker of `pod`."""

    pod: str
    fn: str
    snapshot: str
    mode: RestoreMode = "auto"  # the function's `restore`
    v: int = SCHEMA_VERSION


class SnapshotRestored(Struct, frozen=True, kw_only=True):
    """The reply. `ok` with the worker's `runtime_ref` ("pid:starttime") and `endpoint`
    (http://127.0.0.1:<the snapshot's port>), or not `ok` with `error` saying why; on any
    error the agent cold-starts the pod and records `error` in its events."""

    ok: bool
    runtime_ref: str = ""
    endpoint: str = ""
    error: str = ""
    restore_s: float = 0.0
    how: str = ""  # "eager" or "lazy" (and why, when not as asked)
    v: int = SCHEMA_VERSION


class SnapshotPing(Struct, frozen=True, kw_only=True):
    """Agent -> its node's snapshotter, every heartbeat: are you there, and is your loop turning?"""

    node: str
    at_ms: int
    v: int = SCHEMA_VERSION


class SnapshotPong(Struct, frozen=True, kw_only=True):
    """The reply, sent from the snapshotter's event loop. `capabilities` is what it can do here
    (what the agent reports as NodeCapacity.snapshot_support); `started_ms` tells a restarted
    snapshotter from the same one."""

    node: str
    capabilities: tuple[str, ...]
    started_ms: int
    at_ms: int = 0
    v: int = SCHEMA_VERSION


# The manifest: what a snapshot is, written next to its archive in every tier (so a tier is
# self-describing) and, with the tiers that hold it, in the store's snapshot index.
MANIFEST_VERSION = 1


class Manifest(Struct, frozen=True, kw_only=True):
    id: str
    fn: str
    node: str  # where it was taken
    runtime: str  # "process" (raw CRIU image dir) or "container" (podman checkpoint export)
    created_ms: int
    sha256: str  # of the compressed archive
    size_bytes: int  # compressed
    raw_bytes: int  # uncompressed image
    arch: str
    kernel: str
    criu_version: str
    port: int = 0  # the port the worker listens on inside the image
    gpu: bool = False  # device memory included (cuda-checkpoint)
    gpu_indices: str = ""  # with gpu: the node's GPU indices the worker held ("0,1"); a restore needs the same
    spec_digest: str = ""  # bus_schemas.functions.spec_digest of the spec the worker ran
    sandboxed: bool = False  # taken of a sandboxed worker (thaw_core/sandbox): restored into a new sandbox
    mounts: dict[str, str] = {}  # sandboxed: host mounts the image refers to, key -> host path
    v: int = MANIFEST_VERSION
