"""After a restart: adopt the workers that are still ours, clean up everything else.

A worker is adopted when its process still runs and Redis still has its pod live on this node.
Otherwise the worker is stopped and its pod released, so nothing is orphaned and no vRAM is
counted twice.
"""

import logging

from bus_schemas.pods import LIVE_STATES, PodState
from thaw_core.clock import now_ms
from thaw_core.store.functions import Functions
from thaw_core.store.pods import Pods

from agents.lifecycle import Lifecycle, Worker
from agents.records import WorkerRecords
from agents.runtime.base import WorkerRuntime

log = logging.getLogger(__name__)


async def reconcile(node: str, lifecycle: Lifecycle, records: WorkerRecords, runtime: WorkerRuntime,
                    pods: Pods, functions: Functions) -> tuple[int, int]:
    """Returns (adopted, cleaned)."""
    adopted = cleaned = 0
    known = set()
    for handle, fn in records.all():
        known.add(handle.pod)
        record = await pods.get(handle.pod)
        alive = await runtime.is_alive(handle)
        spec = await functions.get(fn)
        if alive and spec and record and record.node == node and record.state in LIVE_STATES - {PodState.PENDING}:
            lifecycle.workers[handle.pod] = Worker(handle, fn, spec.health_path)
            if record.state in (PodState.STARTING, PodState.RESTORING):
                lifecycle.watch_start(handle.pod, spec)
            adopted += 1
            continue
        log.info("cleaning up worker of pod %s (alive=%s, state=%s)", handle.pod, alive,
                 record.state.value if record else "gone")
        if alive:
            await runtime.stop(handle, 5.0)
        await lifecycle.fail(handle.pod, fn, "worker lost while its agent was down")
        cleaned += 1
    for record in await pods.live():
        # A pod Redis places here that we have no record of: its worker is unknown, so free it.
        # Pending pods are left alone: their placement message is still unacknowledged.
        if record.node == node and record.pod not in known and record.state != PodState.PENDING:
            await lifecycle.fail(record.pod, record.fn, "agent restarted with no record of this worker")
            cleaned += 1
    for handle in await runtime.running():
        if handle.pod not in known:
            await runtime.stop(handle, 5.0)
            cleaned += 1
    log.info("reconciled node %s at %d: %d adopted, %d cleaned", node, now_ms(), adopted, cleaned)
    return adopted, cleaned
