"""Pods for async calls waiting in the INFER_ASYNC work queue: the I/O around
`scaling.pods_for_demand`.

A gateway asks for pods only for the async calls it has taken (at most its `async_in_flight`),
so a queue of thousands for one function, or one stuck behind another function's calls, would
ask for no more than that. Every `backlog_every_s` placement counts each function's queued
calls (thaw_core/async_queue.py: one STREAM.INFO request for all functions) and starts pods for
them, within max_pods. Sync calls keep coming through lease requests; a pod started for either
counts for both, since both read the function's live pods first.

Only calls a gateway accepted count (`infer.async.<fn>.accepted`): a client's claim on
`infer.async.<fn>` is checked only when a gateway takes it, and a message nobody has checked
must not start pods of a function, perhaps another tenant's (DESIGN.md section 8). Claims still
get pods the way they always did: as calls a gateway has taken and is waiting with.
"""

import asyncio
import logging

from thaw_core.async_queue import queued_calls

from placement import scaling
from placement.worker import PlacementWorker

log = logging.getLogger(__name__)


class BacklogScaler:
    def __init__(self, js, worker: PlacementWorker):
        self._js, self._worker = js, worker

    async def scale_up(self) -> None:
        """Start the pods each function's queued calls need now. A queued call's count covers
        it while a gateway runs it too (a work-queue message stays until its call is final), so
        the queue alone is the function's async calls queued and in flight."""
        for fn, queued in (await queued_calls(self._js, accepted_only=True)).items():
            spec = await self._worker.functions.get(fn)
            if spec is None:
                continue  # deleted with calls still queued: the gateway fails them, no pod needed
            pods = await self._worker.pods.live(fn)
            for _ in range(scaling.pods_for_demand(spec, pods, scaling.Demand(queued=queued))):
                if not await self._worker.place_one(spec):
                    break


async def poll(scaler: BacklogScaler, every_s: float, stop: asyncio.Event) -> None:
    """`scaler.scale_up()` every `every_s` until `stop`; a failed round (NATS reconnecting, a
    commit that kept conflicting) is logged and the next one tries again."""
    while not stop.is_set():
        try:
            await scaler.scale_up()
        except Exception as exc:
            log.warning("scaling for queued async calls failed (%s); retrying", exc)
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass
