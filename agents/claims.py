"""A placement message is a claim, not a command: the agent starts and stops what the store
confirms.

Anyone able to publish on `place.assigned.<node>` could otherwise make the agent run any
command in the message's spec. So the pod must be in the store, pending reservation made by
placement's ledger script, for this node and this function; the spec is the function's as
deployed (not the message's), and the GPUs, share and snapshot are the reservation's. Likewise
`place.stop.<node>` stops a pod only once the store has it out of service: placement always
moves a pod to draining (or failed) before it sends the stop.
"""

from bus_schemas.functions import FunctionSpec, spec_digest
from bus_schemas.pods import LIVE_STATES, GpuSlice, PodAssigned, PodState
from thaw_core.store.pods import PodRecord


def confirmed(claimed: PodAssigned, record: PodRecord | None, deployed: FunctionSpec | None,
              node: str) -> PodAssigned | str:
    """The assignment as the store has it, or why the claim is refused."""
    if record is None:
        return "the store has no such pod"
    if record.node != node:
        return f"the store places it on node {record.node!r}, not here"
    if record.fn != claimed.spec.name:
        return f"the store has it for function {record.fn!r}, the message says {claimed.spec.name!r}"
    if deployed is None:
        return f"function {record.fn!r} is not deployed"
    # A snapshot was chosen for the spec placement saw; one deployed since must cold-start.
    snapshot = record.snapshot if spec_digest(deployed) == spec_digest(claimed.spec) else ""
    return PodAssigned(pod=claimed.pod, node=node, spec=deployed, snapshot=snapshot,
                       gpus=GpuSlice(indices=record.gpus, vram_mib=record.vram_mib, gpu_milli=record.gpu_milli))


STOPPABLE = frozenset(PodState) - LIVE_STATES  # placement stops only a pod it took out of service


def stop_refused(record: PodRecord | None, node: str) -> str:
    """Why a stop of this pod is not backed by the store; "" when it is (or the pod is gone)."""
    if record is None:
        return ""
    if record.node != node:
        return f"the store places it on node {record.node!r}, not here"
    if record.state not in STOPPABLE:
        return f"the store has it {record.state.value}, not draining"
    return ""
