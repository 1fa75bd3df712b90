"""Pod lifecycle and the messages that move it (DESIGN.md section 4)."""

import enum

from msgspec import Struct

from bus_schemas.functions import FunctionSpec
from bus_schemas.version import SCHEMA_VERSION


class PodState(str, enum.Enum):
    PENDING = "pending"
    STARTING = "starting"
    RESTORING = "restoring"
    STANDBY = "standby"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


LIVE_STATES = frozenset({PodState.PENDING, PodState.STARTING, PodState.RESTORING, PodState.STANDBY,
                         PodState.IDLE, PodState.BUSY})
SERVING_STATES = frozenset({PodState.IDLE, PodState.BUSY})
TERMINAL_STATES = frozenset({PodState.STOPPED, PodState.FAILED})


class GpuSlice(Struct, frozen=True, kw_only=True):
    """The GPUs a pod holds on its node and the share of each."""

    indices: tuple[int, ...] = ()
    vram_mib: int = 0  # per GPU
    gpu_milli: int = 0  # per GPU, 1000 = a whole GPU


class PodAssigned(Struct, frozen=True, kw_only=True, tag="pod.assigned"):
    """Placement -> agent: start this pod here. The reservation is already committed."""

    pod: str
    node: str
    spec: FunctionSpec
    gpus: GpuSlice
    snapshot: str = ""  # snapshot id to restore from, empty for a cold start
    v: int = SCHEMA_VERSION


class PodStop(Struct, frozen=True, kw_only=True, tag="pod.stop"):
    """Placement -> agent: drain and stop this pod."""

    pod: str
    node: str
    reason: str
    v: int = SCHEMA_VERSION


PlacementMessage = PodAssigned | PodStop


class PodStateChanged(Struct, frozen=True, kw_only=True):
    """Agent -> everyone: a pod moved to `state`. Redis already holds the new state."""

    pod: str
    fn: str
    node: str
    state: PodState
    at_ms: int
    reason: str = ""
    endpoint: str = ""  # http://host:port of the worker once it serves
    # failed before it was ever ready, for a reason of its worker's own (it exited, or never got
    # healthy), as opposed to the platform's (a broken restore, a lost node): calls waiting for
    # it are answered at once, and its function's next pod waits (crash-loop backoff)
    start_failed: bool = False
    v: int = SCHEMA_VERSION
