"""A placement message is a claim, not a command: the agent starts what the store confirms.

Anyone able to publish on `place.assigned.<node>` could otherwise make the agent run any
command in the message's spec. So the pod must be in the store, pending reservation made by
placement's ledger script, for this node and this function; the spec is the function's as
deployed (not the message's), and the GPUs, share and snapshot are the reservation's.
"""

from bus_schemas.functions import FunctionSpec, spec_digest
from bus_schemas.pods import GpuSlice, PodAssigned
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
