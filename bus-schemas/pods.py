"""Pod lifecycle and the messages that move it (DESIGN.md section 4)."""

import enum

from msgspec import Struct

from bus_schemas.functions import FunctionSpec
from bus_schemas.version import SCHEMA_VERSION


class PodState(str, enum.Enum):
    PENDING = "pending"
    STARTING = "starting"
    RESTORING = "restoring"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


# The pod state machine, declared once. The store's compare-and-set scripts (Python guards and
# the Lua in thaw_core.store) take their allowed states from here; nothing else decides.
NOT_READY = frozenset({PodState.PENDING, PodState.STARTING, PodState.RESTORING})
SERVING = frozenset({PodState.IDLE, PodState.BUSY})
LIVE_STATES = NOT_READY | SERVING  # holds resources and may still serve
TERMINAL = frozenset({PodState.STOPPED, PodState.FAILED})
INITIAL = PodState.PENDING  # the ledger's reserve creates a pod in it, with its resources

# to -> the states it may be entered from
MAY_ENTER_FROM: dict[PodState, frozenset[PodState]] = {
    PodState.PENDING: frozenset(),  # only a pod's first state
    PodState.RESTORING: frozenset({PodState.PENDING}),
    PodState.STARTING: frozenset({PodState.PENDING, PodState.RESTORING}),  # a restore falls back to a cold start
    PodState.IDLE: frozenset({PodState.STARTING, PodState.RESTORING, PodState.BUSY}),
    PodState.BUSY: frozenset({PodState.IDLE}),  # a gateway leased its first slot
    PodState.DRAINING: LIVE_STATES,
    PodState.STOPPED: LIVE_STATES | {PodState.DRAINING},
    PodState.FAILED: LIVE_STATES | {PodState.DRAINING},
}


def may_move(from_: PodState, to: PodState) -> bool:
    return from_ in MAY_ENTER_FROM[to]


def sources(to: PodState, narrowed_to: frozenset[PodState] | None = None) -> frozenset[PodState]:
    """The states a pod may enter `to` from, or those of them in `narrowed_to`: a caller may
    ask for less than the machine allows, never more."""
    allowed = MAY_ENTER_FROM[to]
    return allowed if narrowed_to is None else allowed & narrowed_to


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
    """Any service -> everyone: a pod moved to `state`. Redis already holds the new state;
    thaw_core.pod_states publishes it, right after the store's transition that made it."""

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
    # the pod's transition count in the store: events of one pod come from several services,
    # so a reader keeps the highest it saw and drops an older one that arrives late
    seq: int = 0
    v: int = SCHEMA_VERSION
