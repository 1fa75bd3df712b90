"""The agent's side of snapshots: ask for one when a function first runs warm, restore from one
when placement says so. Both go through this node's snapshotter process, over the bus only
(agents never import the snapshotter).

- Request: when a cold-started pod of a function becomes idle and the function has no usable
  snapshot (same spec digest, reachable from here), publish `snapshot.requested.<fn>` with
  `Nats-Msg-Id = snapreq:<fn>:<pod>`, so one pod asks at most once however often it is retried.
- Restore: core request/reply on `snapshot.restore.<node>`; any failure (no snapshotter, a
  timeout, an error reply) raises `RestoreUnavailable` with the reason, and the caller
  cold-starts the pod and records that reason in the pod's events.
- Ping: core request/reply on `snapshot.ping.<node>`, every heartbeat (agents/liveness.py
  decides from the outcomes); the answer carries the capabilities the node reports.
"""

import asyncio
import logging

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from redis.asyncio import Redis

from bus_schemas import subjects
from bus_schemas.codec import DecodeError, decode, encode
from bus_schemas.functions import FunctionSpec, runtime_of, spec_digest
from bus_schemas.pods import PodAssigned
from bus_schemas.snapshots import SnapshotPing, SnapshotPong, SnapshotRequested, SnapshotRestore, SnapshotRestored
from thaw_core import bus, telemetry
from thaw_core.clock import now_ms
from thaw_core.store import events
from thaw_core.store.snapshots import SnapshotCatalog

from agents.runtime.base import WorkerHandle

log = logging.getLogger(__name__)


class RestoreUnavailable(Exception):
    """The pod cannot be restored; `reason` goes to its events and it cold-starts."""

    def __init__(self, snapshot: str, reason: str):
        super().__init__(f"snapshot {snapshot} not restored: {reason}")
        self.snapshot, self.reason = snapshot, reason


class SnapshotterSilent(Exception):
    """A ping got no answer; `reason` says how (no responders, a timeout, the bus away)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SnapshotClient:
    def __init__(self, node: str, nc: Client, js: JetStreamContext, r: Redis, restore_timeout_s: float,
                 runtime: str = "process"):
        self.node, self.runtime = node, runtime  # the agent's runtime: what it restores into
        self._nc, self._js, self._r = nc, js, r
        self._catalog = SnapshotCatalog(r)
        self._timeout = restore_timeout_s
        self.down_reason = ""  # the liveness verdict: why the snapshotter does not answer, "" while it does
        self._went_down = asyncio.Event()

    def mark(self, down_reason: str) -> None:
        """Take the agent's liveness verdict ("" = answering). Going down abandons every
        restore waiting for an answer: their pods cold-start now, not at the restore timeout."""
        if down_reason and not self.down_reason:
            self._went_down.set()
        elif not down_reason and self.down_reason:
            self._went_down = asyncio.Event()
        self.down_reason = down_reason

    async def restore(self, a: PodAssigned) -> tuple[WorkerHandle, float, str]:
        """Restore `a.snapshot` as the worker of `a.pod`: (handle, seconds the snapshotter took,
        how: "eager" or "lazy", with why when not as the function asked).
        The handle's endpoint is where the restored worker answers (a process keeps the
        snapshot's port; a container gets a free host port). Raises RestoreUnavailable."""
        if self.down_reason:
            raise RestoreUnavailable(a.snapshot, f"this node's snapshotter is down: {self.down_reason}")
        req = SnapshotRestore(pod=a.pod, fn=a.spec.name, snapshot=a.snapshot, mode=a.spec.restore)
        try:
            msg = await self._request_unless_down(encode(req))
        except nats.errors.NoRespondersError:
            raise RestoreUnavailable(a.snapshot, f"no snapshotter answers on {subjects.snapshot_restore(self.node)}") from None
        except nats.errors.TimeoutError:
            raise RestoreUnavailable(a.snapshot, f"the snapshotter did not answer within {self._timeout:g}s") from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            raise RestoreUnavailable(a.snapshot, f"bus unavailable: {exc!r}") from None
        if msg is None:
            raise RestoreUnavailable(a.snapshot, f"the snapshotter stopped answering mid-restore: {self.down_reason}")
        try:
            reply = decode(msg.data, SnapshotRestored)
        except DecodeError as exc:
            raise RestoreUnavailable(a.snapshot, f"unreadable reply from the snapshotter: {exc}") from None
        if not reply.ok:
            raise RestoreUnavailable(a.snapshot, reply.error or "the snapshotter gave no reason")
        handle = WorkerHandle(pod=a.pod, runtime=self.runtime, ref=reply.runtime_ref, endpoint=reply.endpoint)
        return handle, reply.restore_s, reply.how or "eager"

    async def _request_unless_down(self, payload: bytes):
        """The restore's answer, or None as soon as the snapshotter is declared down."""
        request = asyncio.ensure_future(self._nc.request(subjects.snapshot_restore(self.node), payload,
                                                         timeout=self._timeout, headers=telemetry.inject({})))
        went_down = asyncio.ensure_future(self._went_down.wait())
        try:
            done, _ = await asyncio.wait({request, went_down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            went_down.cancel()
            if not request.done():
                request.cancel()  # went down, or our caller was cancelled
        return request.result() if request in done else None

    async def request_if_missing(self, spec: FunctionSpec, pod: str) -> bool:
        """Ask for a snapshot of warm `pod` unless the function has a usable one or none can be
        taken here. True when a request was published (repeats are de-duplicated by the bus)."""
        runtime = runtime_of(spec)
        if not spec.snapshot or runtime != self.runtime:
            return False
        offered = await self._catalog.capabilities(self.node)
        if "criu" not in offered or (runtime == "container" and "container" not in offered):
            return False
        digest = spec_digest(spec)
        if await self._catalog.usable(spec.name, digest, self.node, runtime) is not None:
            return False
        msg = SnapshotRequested(fn=spec.name, pod=pod, node=self.node, at_ms=now_ms(), spec_digest=digest)
        await bus.publish(self._js, subjects.snapshot_requested(spec.name), msg, msg_id=f"snapreq:{spec.name}:{pod}")
        log.info("asked for a snapshot of %s from warm pod %s", spec.name, pod)
        return True

    async def ping(self, timeout_s: float) -> SnapshotPong:
        """Ask this node's snapshotter whether it is there; its answer, or SnapshotterSilent."""
        subject = subjects.snapshot_ping(self.node)
        try:
            msg = await self._nc.request(subject, encode(SnapshotPing(node=self.node, at_ms=now_ms())),
                                         timeout=timeout_s)
        except nats.errors.NoRespondersError:
            raise SnapshotterSilent(f"no snapshotter subscribed to {subject}") from None
        except nats.errors.TimeoutError:
            raise SnapshotterSilent(f"no answer within {timeout_s:g}s") from None
        except nats.errors.Error as exc:
            raise SnapshotterSilent(f"bus unavailable: {exc!r}") from None
        try:
            return decode(msg.data, SnapshotPong)
        except DecodeError as exc:
            raise SnapshotterSilent(f"unreadable answer: {exc}") from None

    async def record(self, pod: str, event: str, detail: str) -> None:
        await events.record(self._r, pod, event, detail, now_ms())

    async def stop_reason(self, pod: str) -> str:
        """Why the snapshotter stopped `pod`'s restored worker, or "" if it did not."""
        return await events.stop_reason(self._r, pod)
