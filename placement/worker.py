"""The placement worker: I/O around the pure engine and scaling functions.

It consumes lease requests and node capacity, decides with `placement.engine`, commits each
reservation atomically in Redis (retrying on conflict with a fresh capacity view), publishes
`place.assigned.<node>` / `place.stop.<node>`, and keeps house: expired leases, scale to zero,
min_pods, and pods that no agent reports any more. A new pod names a snapshot to restore from
when its function has a usable one for the chosen node (thaw_core.store.snapshots: same spec
digest, reachable, a live snapshotter there); the node is chosen first, by resources alone. Several workers may run at once: the ledger
script refuses any commit that would over-commit, and every housekeeping step is a CAS.
Each worker decides over one long-lived capacity index (placement/live_index.py), against the
workload learned from the pods the platform asked for (placement/learned_workload.py, shared by
the workers through the store), as the trace replay measures the policy.
A function whose pods keep failing to start gets its next pod later each time
(thaw_core/store/start_failures.py: 1 s, 2 s, 4 s ... 60 s).
"""

import asyncio
import logging
import secrets
from typing import NamedTuple

from redis.exceptions import RedisError

from bus_schemas import subjects
from bus_schemas.functions import FunctionSpec, runtime_of, spec_digest
from bus_schemas.leases import LeaseRequested
from bus_schemas.nodes import NodeCapacity, NodeHeartbeat
from bus_schemas.pods import GpuSlice, PodAssigned, PodState, PodStop
from bus_schemas.codec import DecodeError, decode
from thaw_core import bus
from thaw_core.clock import now_ms
from thaw_core.pod_states import PodStates
from thaw_core.store.functions import Functions
from thaw_core.store.leases import Leases
from thaw_core.store.ledger import Reservation, first_state
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Moved, PodRecord, Pods
from thaw_core.store.quotas import QUOTA_OUTCOMES, Quotas
from thaw_core.store.snapshots import SnapshotCatalog
from thaw_core.store.start_failures import StartFailureLog, StartFailures, wait_left_s
from thaw_core.store.workload import WorkloadCounts
from thaw_core.subscriber import Retry

from placement import drain, scaling
from placement.batches import Batches, Outcomes
from placement.engine.decide import decide
from placement.engine.model import Decision, Placed, PodRequest
from placement.learned_workload import LearnedWorkload
from placement.live_index import LiveIndex
from placement.pod_cache import PodCache
from placement.recent_pods import RecentPods
from placement.requests import pod_request
from placement.settings import PlacementSettings
from placement.spec_cache import SpecCache

log = logging.getLogger(__name__)


def unplaceable_text(reasons: dict[str, str]) -> str:
    """An engine's reasons (filter -> why) as one line for the function's record."""
    return "; ".join(f"{k}: {v}" for k, v in reasons.items()) or "no live node"


class Assignment(NamedTuple):
    """A pod the ledger committed, still to be announced (pending) and sent to its node."""

    reserved: Moved
    spec: FunctionSpec
    placed: Placed
    snapshot: str


class Read(NamedTuple):
    """What a lease request's placement reads of its function: the spec (None: deleted), its
    live pods and its record of failed starts."""

    spec: FunctionSpec | None
    pods: list[PodRecord]
    failures: StartFailures | None


class Planned(NamedTuple):
    """A pod of a batch decided and held on the index, not committed yet."""

    i: int  # which request of the batch it is for
    spec: FunctionSpec
    request: PodRequest
    placed: Placed
    pod: str


class PlacementWorker:
    def __init__(self, settings: PlacementSettings, js, r):
        self.s = settings
        self._js, self._r = js, r
        self.functions, self.pods, self.nodes = Functions(r), Pods(r), Nodes(r)
        # housekeeping's views, read a slice a round; lease requests read their function's afresh
        self.specs, self.live_pods = SpecCache(self.functions), PodCache(self.pods)
        self.recent = RecentPods()
        self.states = PodStates(r, js)
        self.ledger, self.leases = self.states.ledger, Leases(r)
        self.snapshots = SnapshotCatalog(r)
        self.quotas = Quotas(r)
        self.start_failures = StartFailureLog(r)
        self.heartbeat_ms: dict[str, int] = {}
        self.seen_ms: dict[str, int] = {}
        self.started_ms = now_ms()
        self.live = LiveIndex(self.nodes, settings.node_timeout_s)
        self.workload = LearnedWorkload(settings.workload_half_life_s)
        self.workload_counts = WorkloadCounts(r)
        self.workload_synced_ms: int | None = None  # None: the stored workload not read yet
        self._unplaceable_counted: set[str] = set()
        self._lease_batches: Batches[LeaseRequested, list[Assignment]] = Batches(self._commit_batch)
        # One placement at a time in this worker (asyncio.Lock: first come, first served). The
        # consumer hands over a batch of lease requests at once; deciding them side by side over
        # the one index made each decide without the others' pending commits, so they picked the
        # same GPUs, conflicted, read the whole fleet from the store and decided again (measured
        # by bench/fleet_replay.py: more conflicts than requests, ~15 placements/s). Only the
        # decision and the ledger commit hold it: a request's reads come before it and its
        # publishes after, overlapping the next request's placement.
        self._placing = asyncio.Lock()
        self._heartbeats_unstored: dict[str, int] = {}  # node -> its newest heartbeat not in the store yet
        self._heartbeat_stored_ms: dict[str, int] = {}  # node -> the heartbeat last queued for the store
        self._storing_heartbeats: asyncio.Task | None = None
        self._drain_waiting: dict[str, str] = {}  # node -> why its drain waits, as last written

    async def start(self) -> None:
        """Read the workload the workers learned so far and build the index, before the first
        message (place_one would do both on first use too)."""
        await self.live.refresh()
        await self.sync_workload()

    async def sync_workload(self) -> None:
        """Add what this worker saw since the last sync to the shared counts, take every
        worker's back, and measure against them from now on."""
        now = now_ms()
        unsent = self.workload.take_unsynced(now)
        try:
            table = await self.workload_counts.add(unsent, now, self.s.workload_half_life_s)
        except BaseException:
            self.workload.put_back(unsent)
            raise
        self.workload.replace(table)
        self.live.set_workload(self.workload.profile(now, self.live.usual_gpu_vram_mib()))
        self.workload_synced_ms = now

    async def on_lease_requested(self, msg: LeaseRequested, subject: str) -> None:
        assignments = await self._lease_batches.submit(msg)
        await asyncio.gather(*(self._assign(a) for a in assignments))

    async def _commit_batch(self, msgs: list[LeaseRequested]) -> Outcomes:
        """The pods committed for each lease request of a batch (placement/batches.py), not yet
        announced, or the exception it failed with. The reads go before the placement lock
        (their round trips overlap the housekeeping's placements); under it, the pods this
        worker committed for a function since the reads began count too."""
        mark = self.recent.open_read()
        unplaceable: dict[str, str] = {}
        try:
            fns = sorted({m.fn for m in msgs})
            specs, pods, failures = await asyncio.gather(
                self.functions.get_many(fns), self.pods.live_by_function(fns), self.start_failures.get_many(fns))
            reads = {fn: Read(specs[fn], pods[fn], failures[fn]) for fn in fns}
            async with self._placing:
                outcomes = await self._commit_requests(msgs, reads, mark, unplaceable)
        finally:
            self.recent.close_read(mark)
        # after the lock (a store write each under it held up every decision behind it), and
        # before the requests are settled: a caller told "no capacity" finds why. Only a reason:
        # failing to write it must not lose the batch's committed pods, still to be announced.
        try:
            await self._record_unplaceables(unplaceable)
        except RedisError as exc:
            log.warning("could not record why %d function(s) fit nowhere: %r", len(unplaceable), exc)
        return outcomes

    async def _commit_requests(self, msgs: list[LeaseRequested], reads: dict[str, Read], mark: int,
                               unplaceable: dict[str, str]) -> Outcomes:
        """Decide every pod the requests need, one after another over the index (each held on it
        before the next decision), then commit them all in one round trip. The commits the
        ledger refuses for a conflict (another worker's, an agent's release not seen yet) are
        decided again together on a fresh view, up to commit_attempts rounds. Why a function's
        pod fits nowhere goes to `unplaceable` (function -> why), for the caller to record."""
        await self.live.current()
        if self.workload_synced_ms is None:
            await self.sync_workload()
        outcomes: Outcomes = [[] for _ in msgs]
        planned: list[Planned] = []
        for i, msg in enumerate(msgs):
            spec, fn_pods, failures = reads[msg.fn]
            if spec is None or self._waits(spec, failures):
                continue  # deleted meanwhile, or backing off after failed starts
            for _ in range(scaling.pods_to_start(spec, self.recent.since(mark, msg.fn, fn_pods), msg.want_pods)):
                plan = await self._plan(i, spec, unplaceable)
                if plan is None:
                    break
                planned.append(plan)
        for attempt in range(self.s.commit_attempts):
            conflicted = await self._commit_planned(planned, outcomes)
            if not conflicted:
                return outcomes
            log.info("%d commits conflicted; deciding them again on a fresh capacity view", len(conflicted))
            await self.live.refresh()
            planned = [plan for i, spec in conflicted
                       if (plan := await self._plan(i, spec, unplaceable, may_refresh=False))]
        for i, spec in conflicted:
            if not outcomes[i]:  # nothing placed for it: it comes again. Else its pods start, and
                # the gateway asks again for what its callers still miss.
                outcomes[i] = Retry(f"placement of {spec.name} kept conflicting", delay_s=0.2)
        return outcomes

    async def _plan(self, i: int, spec: FunctionSpec, unplaceable: dict[str, str],
                    may_refresh: bool = True) -> Planned | None:
        """A new pod of `spec` for request `i`, decided and held on the index (counted among the
        function's pods for the requests after it), not committed yet; None when it fits nowhere
        (why: in `unplaceable`)."""
        request = pod_request(spec)
        decision = await self._decision(spec, request, may_refresh)
        if not isinstance(decision, Placed):
            unplaceable[spec.name] = unplaceable_text(decision.reasons)
            return None
        pod = f"{spec.name}-{secrets.token_hex(4)}"
        self.live.hold(decision, request)
        self.recent.committed(pod, spec.name, decision.node, now_ms())
        return Planned(i, spec, request, decision, pod)

    async def _commit_planned(self, planned: list[Planned], outcomes: Outcomes) -> list[tuple[int, FunctionSpec]]:
        """Commit `planned` in one round trip; each pod committed joins its request's outcome.
        Returns the pods refused for a conflict, as (request, spec), to be decided again; a pod
        refused for its function's max_pods or its tenant's quota ends its request's placing."""
        try:
            snapshots = await self._snapshots_for(planned)
            at_ms = now_ms()
            reservations = [self._reservation(p.pod, p.spec, p.placed, snapshot)
                            for p, snapshot in zip(planned, snapshots)]
            committed = await self.ledger.reserve_many(reservations, at_ms)
        except BaseException:
            for p in planned:  # committed or not: their nodes are read again
                self.live.let_go(p.placed, p.request)
                self.recent.forget(p.pod)
            raise
        refused: set[int] = set()
        conflicted: list[tuple[int, FunctionSpec]] = []
        for p, reservation, (outcome, node_version) in zip(planned, reservations, committed):
            if outcome in ("ok", "exists"):
                if outcome == "ok":
                    self.live.committed(p.placed.node, node_version)
                    self._observe(p.spec.name, p.request, at_ms)
                outcomes[p.i].append(Assignment(first_state(reservation, at_ms), p.spec, p.placed, reservation.snapshot))
                continue
            self.live.let_go(p.placed, p.request)
            self.recent.forget(p.pod)
            if p.i in refused:
                continue
            if outcome == "max_pods" or outcome in QUOTA_OUTCOMES:
                refused.add(p.i)
                if outcome in QUOTA_OUTCOMES:
                    quota = await self.quotas.describe(p.spec.tenant)
                    await self._record_unplaceable(p.spec.name,
                                                   {"tenant quota": f"{QUOTA_OUTCOMES[outcome]} ({quota})"})
                continue
            conflicted.append((p.i, p.spec))
        return [(i, spec) for i, spec in conflicted if i not in refused]

    async def on_capacity(self, cap: NodeCapacity, subject: str) -> None:
        await self.nodes.upsert_capacity(cap)
        await self.nodes.heartbeat(cap.node, now_ms())
        self.heartbeat_ms[cap.node] = now_ms()
        if not self.live.holds(cap):  # a new node, or new capacity: the fleet changed
            await self.live.refresh()

    async def on_heartbeat(self, data: bytes) -> None:
        try:
            hb = decode(data, NodeHeartbeat)
        except DecodeError:
            return
        now = now_ms()
        self.heartbeat_ms[hb.node] = now
        for pod in hb.pods:
            self.seen_ms[pod] = now
        if now - self._heartbeat_stored_ms.get(hb.node, 0) < self.s.heartbeat_store_every_s * 1000:
            return  # a write per node per second was a tenth of a worker's time (bench/fleet_replay.py)
        self._heartbeat_stored_ms[hb.node] = now
        self._heartbeats_unstored[hb.node] = now
        if self._storing_heartbeats is None or self._storing_heartbeats.done():
            self._storing_heartbeats = asyncio.create_task(self._store_heartbeats())

    async def _store_heartbeats(self) -> None:
        """Write the newest heartbeat of each node to the store, off the heartbeat handler: it is
        called once per message, one message after another, so a store round trip each capped
        what it could take (1,213 nodes a second fell behind by seconds, and pods they listed
        were reclaimed as unreported: bench/fleet_replay.py). A node heard from again meanwhile
        is written once, with its latest time."""
        while self._heartbeats_unstored:
            batch, self._heartbeats_unstored = self._heartbeats_unstored, {}
            await self.nodes.heartbeats(batch)

    async def place_one(self, spec: FunctionSpec, max_pods: int | None = None) -> bool:
        """Place one new pod of `spec`. False when it cannot (no capacity, max_pods reached, or
        its function is backing off after failed starts). `max_pods`: the limit the ledger checks
        instead of the spec's (a drained node's replacements, placement/drain.py)."""
        if await self._backing_off(spec):
            return False
        assignment = await self._commit_one(spec, max_pods)
        if assignment is None:
            return False
        await self._assign(assignment)
        return True

    async def _commit_one(self, spec: FunctionSpec, max_pods: int | None = None) -> Assignment | None:
        """Decide where one new pod of `spec` goes and commit it in the ledger; None when it
        cannot be placed. Its announcement is the caller's (`_assign`)."""
        request = pod_request(spec)
        await self.live.current()
        if self.workload_synced_ms is None:
            await self.sync_workload()
        for attempt in range(self.s.commit_attempts):
            decision = await self._decision(spec, request, may_refresh=attempt == 0)
            if not isinstance(decision, Placed):
                await self._record_unplaceables({spec.name: unplaceable_text(decision.reasons)})
                return None
            generation = self.live.generation
            pod = f"{spec.name}-{secrets.token_hex(4)}"
            snapshot = await self._snapshot_for(spec, decision.node)
            reservation, at_ms = self._reservation(pod, spec, decision, snapshot, max_pods), now_ms()
            outcome = await self.ledger.reserve(reservation, at_ms)
            if outcome in ("ok", "exists"):
                if outcome == "ok":
                    self.live.reserved(decision, request, generation)
                    self.recent.committed(pod, spec.name, decision.node, at_ms)
                    self._observe(spec.name, request, at_ms)
                return Assignment(first_state(reservation, at_ms), spec, decision, snapshot)
            if outcome == "max_pods":
                return None
            if outcome in QUOTA_OUTCOMES:
                quota = await self.quotas.describe(spec.tenant)
                await self._record_unplaceable(spec.name, {"tenant quota": f"{QUOTA_OUTCOMES[outcome]} ({quota})"})
                return None
            log.info("commit for %s conflicted (%s); deciding again on a fresh capacity view", spec.name, outcome)
            await self.live.refresh()
        raise Retry(f"placement of {spec.name} kept conflicting", delay_s=0.2)

    async def _decision(self, spec: FunctionSpec, request: PodRequest, may_refresh: bool = True) -> Decision:
        """Where the index says a new pod of `spec` fits, or why it fits nowhere, even after
        reading the store again if the view may be behind (for the caller to record, so that a
        waiting caller's 503 says it)."""
        decision = decide(await self.live.current(), request, spec.placement_policy)
        if not isinstance(decision, Placed) and may_refresh and self._view_may_be_behind():
            # capacity freed since the last refresh (a pod stopped) may fit it
            decision = decide(await self.live.refresh(), request, spec.placement_policy)
        if not isinstance(decision, Placed):
            self._observe_unplaceable(spec.name, request)
        return decision

    def _view_may_be_behind(self) -> bool:
        """Whether to read the store again before calling a pod unplaceable: not when it was read
        within one housekeeping round. Every round refreshes anyway, so a release is seen as
        late at worst; and a full fleet turns request after request away, each of which would
        otherwise read every node (at 1,213 nodes ~0.5 s apiece: bench/fleet_replay.py)."""
        return now_ms() - self.live.refreshed_ms >= self.s.housekeeping_every_s * 1000

    def _observe(self, fn: str, request: PodRequest, at_ms: int) -> None:
        """A pod of `fn` placed: one more request of its shape in the learned workload."""
        self._unplaceable_counted.discard(fn)
        self.workload.observe(fn, request, at_ms)

    def _observe_unplaceable(self, fn: str, request: PodRequest) -> None:
        """A pod that fits nowhere is asked for too, and the profile must protect room for its
        shape; but a function's unplaceable pod is retried every housekeeping round and on
        every lease request, so it counts once per run of failures, not once per retry."""
        if fn not in self._unplaceable_counted:
            self._unplaceable_counted.add(fn)
            self.workload.observe(fn, request, now_ms())

    async def _backing_off(self, spec: FunctionSpec) -> bool:
        """Whether `spec`'s last pods failed to start too recently for another one yet. This is
        the one place a crash loop is slowed: every new pod, for callers or for min_pods, comes
        through place_one, and the record is in Redis, so a restarted worker keeps the pace."""
        return self._waits(spec, await self.start_failures.get(spec.name))

    def _waits(self, spec: FunctionSpec, record: StartFailures | None) -> bool:
        """Whether `record` (spec's start failures) holds its next pod back yet."""
        if record is None:
            return False
        wait_s = wait_left_s(record, spec_digest(spec), now_ms())
        if wait_s > 0:
            log.debug("not starting a pod of %s for %.1fs more: %d starts in a row failed", spec.name, wait_s,
                      record.failures)
        return wait_s > 0

    async def _snapshots_for(self, planned: list[Planned]) -> list[str]:
        """`_snapshot_for` of each planned pod, looked up side by side for the functions that
        snapshot (a task each for the others too was ~2% of a busy worker's time)."""
        found = iter(await asyncio.gather(*(self._snapshot_for(p.spec, p.placed.node)
                                            for p in planned if p.spec.snapshot)))
        return [next(found) if p.spec.snapshot else "" for p in planned]

    async def _snapshot_for(self, spec: FunctionSpec, node: str) -> str:
        """The snapshot a new pod of `spec` on `node` restores from, "" for a cold start."""
        if not spec.snapshot:
            return ""
        found = await self.snapshots.usable(spec.name, spec_digest(spec), node, runtime_of(spec))
        return found.id if found else ""

    def _reservation(self, pod: str, spec: FunctionSpec, p: Placed, snapshot: str = "",
                     max_pods: int | None = None) -> Reservation:
        r = spec.resources
        return Reservation(pod=pod, fn=spec.name, node=p.node, gpus=p.gpus, vram_mib=p.vram_mib,
                           gpu_milli=p.gpu_milli, cpu_milli=r.cpu_milli, memory_mib=r.memory_mib,
                           max_pods=spec.scaling.max_pods if max_pods is None else max_pods,
                           concurrency=spec.scaling.concurrency,
                           snapshot=snapshot, tenant=spec.tenant)

    async def _assign(self, assignment: Assignment) -> None:
        reserved, spec, p, snapshot = assignment
        pod = reserved.pod
        msg = PodAssigned(pod=pod, node=p.node, spec=spec, snapshot=snapshot,
                          gpus=GpuSlice(indices=p.gpus, vram_mib=p.vram_mib, gpu_milli=p.gpu_milli))
        # `pending` is on the PODS stream before the agent can hear of the pod, so its `restoring`
        # or `starting` never lands first (a pod's states had two producers racing).
        await self.states.announce(reserved)
        await bus.publish(self._js, subjects.place_assigned(p.node), msg, msg_id=f"assign:{pod}")
        log.info("placed %s on %s GPUs %s (%d MiB, %d milli each)", pod, p.node, p.gpus, p.vram_mib, p.gpu_milli)

    async def _record_unplaceable(self, fn: str, reasons: dict[str, str]) -> None:
        await self._record_unplaceables({fn: unplaceable_text(reasons)})

    async def _record_unplaceables(self, whys: dict[str, str]) -> None:
        """Function -> why its pod fits nowhere: kept on the function so a waiting caller's 503
        can say why."""
        for fn, why in whys.items():
            log.warning("cannot place %s: %s", fn, why)
        await self.functions.record_unplaceable_many(whys, now_ms())

    async def housekeeping(self) -> None:
        mark = self.recent.open_read()
        try:
            await self._housekeeping(mark)
        finally:
            self.recent.close_read(mark)

    async def _housekeeping(self, mark: int) -> None:
        """One round, over live pods and specs read a slice a round (placement/pod_cache.py,
        spec_cache.py: every record each round cost most of a worker's time on a large fleet,
        bench/fleet_replay.py). Pods are read once a round: what the round ended is taken out,
        and min_pods also counts the pods lease requests committed since."""
        now = now_ms()
        pods = await self.live_pods.current()
        for p in pods:
            if p.state == PodState.BUSY:
                await self.states.announce(await self.leases.sweep(p.pod, now))
        reclaimed = await self._reclaim_lost(pods, now)
        specs = await self.specs.current({p.fn for p in pods})
        by_fn: dict[str, list] = {}
        for p in pods:
            if p.pod not in reclaimed:
                by_fn.setdefault(p.fn, []).append(p)
        for fn, fn_pods in by_fn.items():
            if fn not in specs:
                await self._drain_deleted(fn_pods)
            else:
                await self._scale_down(specs[fn], fn_pods, now)
        async with self._placing:
            await self._keep_current(now)
            await self._hand_over(by_fn, specs, now)
            for spec in specs.values():
                if spec.scaling.min_pods <= 0:
                    continue  # nothing to keep: pods_to_start would say 0
                fn_pods = self.recent.since(mark, spec.name, by_fn.get(spec.name, []))
                for _ in range(scaling.pods_to_start(spec, fn_pods, 0)):
                    if not await self.place_one(spec):
                        break

    async def _keep_current(self, now: int) -> None:
        """Each round: the index catches up with every change to the ledger (other workers'
        commits, agents' releases, this round's reclaims); every few seconds the learned
        workload is synced with the other workers'."""
        if self.workload_synced_ms is None or now - self.workload_synced_ms >= self.s.workload_sync_every_s * 1000:
            await self.sync_workload()
        await self.live.refresh()

    async def _hand_over(self, by_fn: dict[str, list], specs: dict[str, FunctionSpec], now: int) -> None:
        """Move the pods of draining nodes (as of the refresh just made) to other nodes:
        placement/drain.py decides, this does it."""
        draining = self.live.draining
        pods = [p for fn, fn_pods in by_fn.items() if fn in specs for p in fn_pods]
        await self._stop_retired(pods, now)
        if not draining:
            return
        plan = drain.handover(pods, draining)
        for pod in plan.stop:
            node = next(p.node for p in pods if p.pod == pod)
            await self.states.move(pod, PodState.DRAINING, now, reason=f"node {node} is draining")
            await self._stop(pod, node, f"node {node} is draining")
        unplaced: dict[str, str] = {}
        for fn, count in plan.start.items():
            for _ in range(count):
                if not await self.place_one(specs[fn], max_pods=plan.pod_limit[fn]):
                    log.warning("drain: no replacement of %s placed this round; its drained pods keep serving", fn)
                    unplaced[fn] = await self.functions.unplaceable(fn, since_ms=now) or "not placed yet"
                    break
        for node, why in drain.drain_waiting(pods, draining, unplaced).items():
            if self._drain_waiting.get(node) != why:
                await self.nodes.note_drain_waiting(node, why)
                self._drain_waiting[node] = why
        for pod in plan.retire:
            await self.states.announce(await self.leases.retire(pod, now, drain.RETIRED), reason=drain.RETIRED)

    async def _stop_retired(self, pods: list, now: int) -> None:
        """Stop the pods a drain retired once their callers are done (if their node was undrained
        meanwhile too: a retired pod serves no more)."""
        retired = drain.retired(pods)
        in_use = {p.pod: await self.leases.in_use(p.pod, now) for p in retired}
        for pod in drain.retired_pods_to_stop(retired, in_use, now):
            node = next(p.node for p in retired if p.pod == pod)
            await self._stop(pod, node, f"node {node} drained: replaced elsewhere")

    async def _scale_down(self, spec: FunctionSpec, pods: list, now: int) -> None:
        cutoff = now - int(spec.scaling.idle_timeout_s * 1000)
        for pod in scaling.pods_to_drain(spec, pods, now):
            drained = await self.leases.begin_drain(pod, cutoff, now, "idle timeout")
            await self.states.announce(drained, reason="idle timeout")
            if drained.applied:
                node = next(p.node for p in pods if p.pod == pod)
                await self._stop(pod, node, f"idle for {spec.scaling.idle_timeout_s:g}s")

    async def _drain_deleted(self, pods: list) -> None:
        for p in pods:
            await self.states.move(p.pod, PodState.DRAINING, now_ms(), reason="function deleted")
            await self._stop(p.pod, p.node, "function deleted")

    async def _reclaim_lost(self, pods: list, now: int) -> set[str]:
        """End the pods no agent reports any more; returns the pods found lost."""
        lost = scaling.lost_pods(pods, self.heartbeat_ms, self.seen_ms, now, self.s.node_timeout_s,
                                 self.s.unreported_grace_s, self.s.pending_timeout_s, self.started_ms)
        for pod, reason in lost:
            record = next(p for p in pods if p.pod == pod)
            if await self.states.end(pod, PodState.FAILED, reason, now):
                log.warning("reclaimed pod %s: %s", pod, reason)
                await self._stop(pod, record.node, reason)
        return {pod for pod, _ in lost}

    async def _stop(self, pod: str, node: str, reason: str) -> None:
        await bus.publish(self._js, subjects.place_stop(node), PodStop(pod=pod, node=node, reason=reason),
                          msg_id=f"stop:{pod}")
