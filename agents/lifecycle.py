"""Pod lifecycle on one node: start, watch until ready, stop, fail. Every step is idempotent.

Redis holds each pod's state and is changed only by compare-and-set, so a redelivered
placement message, a stop racing a start, or a restarted agent each change nothing twice.

A pod placed with a snapshot goes `pending -> restoring -> idle`; if the restore cannot be
had (no snapshotter, a timeout, a corrupt or incompatible image, the snapshot's port busy) or
the restored worker is not healthy within the start timeout, it is stopped, the reason is
recorded in the pod's events, and the pod goes `restoring -> starting -> idle` on a cold start:
never a broken worker. A cold-started pod that becomes idle asks for a snapshot of itself
when its function has none.
"""

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from nats.js import JetStreamContext

from bus_schemas.functions import FunctionSpec, spec_digest
from bus_schemas.pods import LIVE_STATES, SERVING, PodAssigned, PodState
from thaw_core import telemetry
from thaw_core.clock import now_ms
from thaw_core.ports import free_port
from thaw_core.sandbox.network import NetworkError
from thaw_core.pod_states import PodStates
from thaw_core.store.functions import Functions
from thaw_core.store.pods import Moved
from thaw_core.store.start_failures import StartFailureLog

from agents.claims import confirmed, stop_refused
from agents.env import expand_command, worker_env, worker_limits
from agents.health import healthy, probe
from agents.records import WorkerRecords
from agents.runtime.base import WorkerHandle, WorkerLaunch, WorkerRuntime
from agents.snapshots import RestoreUnavailable, SnapshotClient
from agents.start_failure import describe, log_tail
from agents.vram import Share, VramWatch

log = logging.getLogger(__name__)
POD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")  # placement's `<fn>-<8 hex>`, and function names are lowercase


@dataclass
class Worker:
    handle: WorkerHandle
    fn: str
    health_path: str
    probe_failures: int = 0
    restored_from: str = ""  # snapshot id, "" for a cold start
    last_probe: str = ""  # what the last failed health probe got, for the reason of a failed start


class Lifecycle:
    def __init__(self, node: str, js: JetStreamContext, states: PodStates, functions: Functions,
                 runtime: WorkerRuntime,
                 records: WorkerRecords, http: aiohttp.ClientSession, log_dir: Path, stop_grace_s: float,
                 snapshots: SnapshotClient | None = None, vram: VramWatch | None = None,
                 start_failures: StartFailureLog | None = None):
        self.node = node
        self._functions = functions
        self._js, self._states, self._pods, self._runtime = js, states, states.pods, runtime
        self._records, self._http, self._log_dir, self._grace = records, http, log_dir, stop_grace_s
        self._snapshots = snapshots  # None: this node neither restores nor asks for snapshots
        self._vram = vram  # None: GPU memory is not watched
        self._start_failures = start_failures  # None: failed starts are not counted (no backoff)
        self.workers: dict[str, Worker] = {}
        self.restoring: set[str] = set()  # pods whose restore is under way: no worker handle yet
        self._tasks: set[asyncio.Task] = set()

    async def start(self, a: PodAssigned) -> None:
        """Start the pod placement assigned here: restore it from `a.snapshot` when there is one
        and this node can, else cold-start it. A repeat, or a pod no longer pending, is a no-op.
        What runs is what the store confirms (agents/claims.py), not what the message says."""
        if a.pod in self.workers:
            return
        checked = confirmed(a, await self._pods.get(a.pod), await self._functions.get(a.spec.name), self.node)
        if isinstance(checked, str):
            log.warning("ignoring a placement of pod %s: %s", a.pod, checked)
            return
        a = checked
        restore = bool(a.snapshot) and self._snapshots is not None and self._snapshots.runtime == self._runtime.name
        first = PodState.RESTORING if restore else PodState.STARTING
        moved = await self._states.move(a.pod, first, now_ms(), only_from=frozenset({PodState.PENDING}))
        if not moved.applied:
            log.info("pod %s is %s, not pending: nothing to start", a.pod, moved.found or "gone")
            return
        if restore:
            # Waiting on the snapshotter (up to restore_timeout_s) must not hold up the next
            # placement for this node; the state change above is already durable.
            self._spawn(self._restore_or_cold_start(a))
            return
        await self._cold_start(a)

    async def _restore_or_cold_start(self, a: PodAssigned) -> None:
        self.restoring.add(a.pod)
        try:
            restored = await self._restore(a)
        finally:
            self.restoring.discard(a.pod)
        if not restored:
            await self._fall_back(a, "")

    def reported(self) -> tuple[str, ...]:
        """The pods this node reports in its heartbeats: those with a worker, and those being
        restored. A restore can take longer than placement's unreported grace (a big image, a
        busy snapshotter): unlisted, the pod was reclaimed mid-restore."""
        return tuple(sorted(self.workers.keys() | self.restoring))

    async def _restore(self, a: PodAssigned) -> bool:
        """Have the snapshotter restore the worker; True once it runs and is being watched."""
        try:
            self._runtime.prepare(a.pod, worker_limits(a.spec))
            handle, took_s, how = await self._snapshots.restore(a)
        except OSError as exc:
            await self._snapshots.record(a.pod, "restore_failed", f"cold start instead: the pod's cgroup: {exc}")
            return False
        except RestoreUnavailable as exc:
            await self._snapshots.record(a.pod, "restore_failed", f"cold start instead: {exc}")
            return False
        self._records.save(handle, a.spec.name)
        self.workers[a.pod] = Worker(handle, a.spec.name, a.spec.health_path, restored_from=a.snapshot)
        await self._pods.set_fields(a.pod, runtime_ref=handle.ref, restored_from=a.snapshot)
        await self._snapshots.record(a.pod, "restored", f"from snapshot {a.snapshot} in {took_s:.3f}s, {how} "
                                                        f"(worker {handle.ref}, {handle.endpoint})")
        self._spawn(self._await_ready(a.pod, a.spec, fallback=a))
        return True

    async def _fall_back(self, a: PodAssigned, why: str) -> None:
        """Restoring did not give a healthy worker: stop what it gave (if anything), note why,
        and cold-start the pod, unless it was stopped meanwhile."""
        worker = self.workers.pop(a.pod, None)
        if worker is not None:
            await self._runtime.stop(worker.handle, 1.0)
            self._records.remove(a.pod)
        if why:
            await self._snapshots.record(a.pod, "restore_failed", f"cold start instead: {why}")
        moved = await self._states.move(a.pod, PodState.STARTING, now_ms(), only_from=frozenset({PodState.RESTORING}))
        if not moved.applied:
            log.info("pod %s is %s, not restoring: no cold start", a.pod, moved.found or "gone")
            await self._runtime.forget(a.pod)
            return
        await self._cold_start(a)

    async def _cold_start(self, a: PodAssigned) -> None:
        port = a.spec.port or free_port()
        uid = await self._functions.worker_uid(a.spec.name) or 0
        launch = WorkerLaunch(pod=a.pod, fn=a.spec.name, port=port, command=expand_command(a.spec.command),
                              image=a.spec.image, env=worker_env(a, port), log_path=self._log_dir / f"{a.pod}.log",
                              uid=uid, limits=worker_limits(a.spec))
        try:
            handle = await self._runtime.start(launch)
        except NetworkError as exc:  # the node's pod network, not the function: its message says what to do
            await self.fail(a.pod, a.spec.name, f"could not start the worker: {exc}")
            return
        except (OSError, ValueError) as exc:
            await self.fail(a.pod, a.spec.name, f"could not start the worker: {exc}; check the function's command",
                            failed_start=a.spec)
            return
        self._records.save(handle, a.spec.name)
        self.workers[a.pod] = Worker(handle, a.spec.name, a.spec.health_path)
        await self._pods.set_fields(a.pod, runtime_ref=handle.ref, log=str(launch.log_path))
        self._spawn(self._await_ready(a.pod, a.spec))

    def watch_start(self, pod: str, spec: FunctionSpec) -> None:
        """Resume waiting for an adopted pod that was still starting when the agent died."""
        self._spawn(self._await_ready(pod, spec))

    async def _await_ready(self, pod: str, spec: FunctionSpec, fallback: PodAssigned | None = None) -> None:
        """Probe until healthy -> idle. A cold start that dies or stays unhealthy fails the pod;
        a restored worker (`fallback` given) is stopped and the pod cold-started instead."""
        attributes: dict[str, str | bool] = {"thaw.pod": pod, "thaw.restored": fallback is not None}
        with telemetry.span("await healthy", **attributes):
            await self._probe_until_ready(pod, spec, fallback)

    async def _probe_until_ready(self, pod: str, spec: FunctionSpec, fallback: PodAssigned | None) -> None:
        worker = self.workers.get(pod)
        if worker is None:
            return
        deadline = asyncio.get_running_loop().time() + spec.scaling.start_timeout_s
        delay = 0.02
        while asyncio.get_running_loop().time() < deadline:
            if self.workers.get(pod) is not worker:
                return  # stopped (or replaced) meanwhile
            if not await self._runtime.is_alive(worker.handle):
                stopped = await self._stop_reason(pod, worker)
                if stopped:  # the snapshotter's verdict: a broken copy, not a slow one (nor a crash loop)
                    await self.fail(pod, spec.name, stopped)
                    return
                if fallback is not None:
                    await self._fall_back(fallback, "the restored worker exited before it was healthy")
                    return
                how = self._runtime.exit_reason(worker.handle)
                ended = f"the worker stopped during start-up ({how})" if how else "the worker stopped during start-up"
                await self.fail(pod, spec.name, self._start_failure(pod, ended), failed_start=spec)
                return
            worker.last_probe = await probe(self._http, worker.handle.endpoint, spec.health_path)
            if not worker.last_probe:
                if not await self._ready(pod, spec.name, worker.handle):
                    return
                await self._start_succeeded(spec)
                if not worker.restored_from and self._snapshots is not None:
                    self._spawn(self._ask_for_snapshot(spec, pod))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        if fallback is not None:
            await self._fall_back(fallback, f"the restored worker was not healthy within "
                                            f"start_timeout_s={spec.scaling.start_timeout_s:g}")
            return
        if self.workers.get(pod) is not worker:
            return
        how = f"the worker was not healthy within start_timeout_s={spec.scaling.start_timeout_s:g}"
        await self.fail(pod, spec.name, self._start_failure(pod, how, worker.last_probe), failed_start=spec)

    def _start_failure(self, pod: str, how: str, last_probe: str = "") -> str:
        """The reason a cold start failed: `how`, the last probe result, the log's last lines."""
        log_path = self._log_dir / f"{pod}.log"
        return describe(how, last_probe, log_tail(log_path), log_path)

    async def _ask_for_snapshot(self, spec: FunctionSpec, pod: str) -> None:
        try:
            await self._snapshots.request_if_missing(spec, pod)
        except Exception:  # a missed snapshot costs only cold starts later; never the pod
            log.exception("could not ask for a snapshot of %s", spec.name)

    async def _ready(self, pod: str, fn: str, handle: WorkerHandle) -> bool:
        """Starting/restoring -> idle. True when this call made the pod idle."""
        now = now_ms()
        moved = await self._states.move(pod, PodState.IDLE, now, frozenset({PodState.STARTING, PodState.RESTORING}),
                                        endpoint=handle.endpoint, last_used_ms=now)
        if not moved.applied and moved.found not in {s.value for s in LIVE_STATES}:
            await self.stop(pod, f"pod became {moved.found or 'unknown'} while starting")
        return moved.applied

    async def stop_if_confirmed(self, pod: str, reason: str) -> None:
        """A `place.stop` claim: stop the pod if the store has it out of service."""
        if not POD_NAME.fullmatch(pod):
            # a pod name becomes a file and a cgroup name here: never a path
            log.warning("ignoring a stop of pod %r: not a pod name", pod[:100])
            return
        why = stop_refused(await self._pods.get(pod), self.node)
        if why:
            log.warning("ignoring a stop of pod %s: %s", pod, why)
            return
        await self.stop(pod, reason)

    async def stop(self, pod: str, reason: str) -> None:
        """Drain, stop the worker, free the ledger, forget the pod. Safe to repeat."""
        await self._states.move(pod, PodState.DRAINING, now_ms(), reason=reason)
        worker = self.workers.get(pod)
        handle = worker.handle if worker else self._recorded_handle(pod)
        if handle is not None:
            await self._runtime.stop(handle, self._grace)
        else:
            await self._runtime.forget(pod)
        # Dropped only now, so heartbeats keep listing the pod while it drains.
        self.workers.pop(pod, None)
        await self._states.end(pod, PodState.STOPPED, reason, now_ms())
        self._records.remove(pod)

    async def stop_all(self, reason: str) -> None:
        """On shutdown the workers stop first and their records after, so a Redis or NATS that is
        gone cannot keep a worker running past its agent (the next agent's reconcile puts the
        records right)."""
        handles = [worker.handle for worker in self.workers.values()]
        await asyncio.gather(*(self._runtime.stop(h, self._grace) for h in handles), return_exceptions=True)
        await asyncio.gather(*(self.stop(pod, reason) for pod in list(self.workers)), return_exceptions=True)

    async def fail(self, pod: str, fn: str, reason: str, failed_start: FunctionSpec | None = None) -> None:
        """Stop the pod's worker, free its slice, mark it failed with `reason`. `failed_start`:
        the spec of a pod that never became healthy, counted once toward its function's crash
        loop (placement backs off on it) and announced as such (waiting calls get its reason)."""
        log.warning("pod %s failed: %s", pod, reason)
        worker = self.workers.pop(pod, None)
        if worker is not None:
            await self._runtime.stop(worker.handle, 1.0)
        async def count_the_failed_start(_: Moved) -> None:
            # counted before the event, so placement, woken by it, already sees the failure
            if failed_start is not None and self._start_failures is not None:
                await self._start_failures.record(fn, spec_digest(failed_start), reason, now_ms())

        await self._states.end(pod, PodState.FAILED, reason, now_ms(), start_failed=failed_start is not None,
                               before_event=count_the_failed_start)
        self._records.remove(pod)

    async def _start_succeeded(self, spec: FunctionSpec) -> None:
        """A pod of `spec` became healthy: its function's crash loop, if any, is over."""
        if self._start_failures is not None:
            await self._start_failures.clear(spec.name, spec_digest(spec))

    async def check_workers(self) -> None:
        """Fail pods whose process died, that failed three health probes in a row, or that use
        more GPU memory than their share."""
        shares: list[Share] = []
        for pod, worker in list(self.workers.items()):
            if not await self._runtime.is_alive(worker.handle):
                record = await self._pods.get(pod)
                if record is not None and record.state in (PodState.STARTING, PodState.RESTORING):
                    continue  # its start watcher decides: fail a cold start, fall back from a restore
                if record is not None and record.state == PodState.DRAINING:
                    continue  # being stopped: a container is gone before `stop` returns
                why = self._runtime.exit_reason(worker.handle) or await self._stop_reason(pod, worker)
                await self.fail(pod, worker.fn, why or "worker process exited")
                continue
            record = await self._pods.get(pod)
            if record is None or record.state not in SERVING:
                continue
            if record.gpus:
                shares.append(Share(pod, worker.fn, record.gpus, record.vram_mib, self._runtime.pids(worker.handle)))
            if await healthy(self._http, worker.handle.endpoint, worker.health_path, timeout_s=2.0):
                worker.probe_failures = 0
            else:
                worker.probe_failures += 1
                if worker.probe_failures >= 3:
                    await self.fail(pod, worker.fn, "worker failed 3 health probes in a row")
        if self._vram is not None:
            for over in await self._vram.over(shares):
                await self.fail(over.pod, over.fn, over.reason())

    async def _stop_reason(self, pod: str, worker: Worker) -> str:
        """Why the snapshotter stopped this restored worker (e.g. its lazy restore failed), or ""."""
        if not worker.restored_from or self._snapshots is None:
            return ""
        return await self._snapshots.stop_reason(pod)

    def _recorded_handle(self, pod: str) -> WorkerHandle | None:
        for handle, _ in self._records.all():
            if handle.pod == pod:
                return handle
        return None

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._runtime.close()
