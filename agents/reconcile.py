"""After a restart: adopt the workers that are still ours, clean up everything else.

Candidates are the agent's own records plus every live process the runtime finds for this node
(a worker started just before a crash may have no record yet). A candidate is adopted when its
process runs and Redis still has its pod live on this node; otherwise it is stopped and its pod
released. So nothing is orphaned and no vRAM is counted twice.
"""

import logging

from bus_schemas.pods import LIVE_STATES, PodState
from thaw_core.store.functions import Functions
from thaw_core.store.pods import Pods

from agents.lifecycle import Lifecycle, Worker
from agents.records import WorkerRecords
from agents.runtime.base import WorkerHandle, WorkerRuntime

log = logging.getLogger(__name__)


async def reconcile(node: str, lifecycle: Lifecycle, records: WorkerRecords, runtime: WorkerRuntime,
                    pods: Pods, functions: Functions) -> tuple[int, int]:
    """Returns (adopted, cleaned)."""
    candidates = await _candidates(records, runtime, pods)
    adopted = cleaned = 0
    for handle, fn in candidates.values():
        if await _adopt(node, lifecycle, records, runtime, pods, functions, handle, fn):
            adopted += 1
            continue
        log.info("cleaning up worker of pod %s", handle.pod)
        if await runtime.is_alive(handle):
            await runtime.stop(handle, 5.0)
        await lifecycle.fail(handle.pod, fn, "worker lost while its agent was down")
        cleaned += 1
    for record in await pods.live():
        # Redis places a pod here but no worker exists for it: free it. Pending pods are left
        # alone: their placement message is still unacknowledged and will come again.
        if record.node == node and record.pod not in candidates and record.state != PodState.PENDING:
            await lifecycle.fail(record.pod, record.fn, "agent restarted and found no worker for this pod")
            cleaned += 1
    log.info("reconciled node %s: %d adopted, %d cleaned", node, adopted, cleaned)
    return adopted, cleaned


async def _candidates(records: WorkerRecords, runtime: WorkerRuntime, pods: Pods) -> dict[str, tuple[WorkerHandle, str]]:
    found = {handle.pod: (handle, fn) for handle, fn in records.all()}
    # A worker restored from a snapshot carries the environment (THAW_POD) of the pod it was
    # snapshotted from, so a runtime sighting is matched by its ref before its pod name.
    recorded = {handle.ref for handle, _ in found.values()}
    for handle in await runtime.running():
        if handle.ref not in recorded and handle.pod not in found:
            record = await pods.get(handle.pod)
            found[handle.pod] = (handle, record.fn if record else "")
    return found


async def _adopt(node: str, lifecycle: Lifecycle, records: WorkerRecords, runtime: WorkerRuntime, pods: Pods,
                 functions: Functions, handle: WorkerHandle, fn: str) -> bool:
    record = await pods.get(handle.pod)
    spec = await functions.get(fn) if fn else None
    if not (spec and record and record.node == node and record.state in LIVE_STATES - {PodState.PENDING}
            and await runtime.is_alive(handle)):
        return False
    records.save(handle, fn)
    lifecycle.workers[handle.pod] = Worker(handle, fn, spec.health_path)
    if record.state in (PodState.STARTING, PodState.RESTORING):
        lifecycle.watch_start(handle.pod, spec)
    return True
