"""One long-lived capacity index per placement worker, kept current from the store.

The engine's `CapacityIndex` is incremental: its per-request-shape rankings (Thaw's) are
caught up from the groups that changed, so a decision costs O(changes + log n) rather than
O(fleet) - but only if the index lives across decisions. This class owns it and does its I/O:

- built once from the live nodes in the store (and again only when the fleet changes: a node
  joins, goes silent, or reports other capacity, because the engine's fleet-level memo tables
  depend on capacities);
- this worker's own commits are applied to it at once (`reserved`);
- everything else that moves the ledger (other placement workers' commits, agents' releases,
  this worker's reclaims) reaches it by `refresh`: a small read per node (its version, which
  every ledger script and capacity report bumps, its heartbeat and drain mark), then a full
  read and an index update only for the nodes whose version moved. A fleet-wide read each time
  cost ~1.8 s at 1,213 nodes, every housekeeping round (bench/fleet_replay.py). The worker
  refreshes every housekeeping round, when a commit conflicts (the ledger refused: the view was
  stale) and before it calls a request unplaceable.

The store stays the truth and the ledger the arbiter: a stale index can only cost a conflict
(then a refresh and a new decision) or a refresh before an "unplaceable".
"""

from collections import Counter
from typing import NamedTuple

from bus_schemas.nodes import NodeCapacity
from thaw_core.clock import now_ms
from thaw_core.store.nodes import Nodes

from placement.capacity_view import Capacity, capacity, node_view
from placement.engine.index import CapacityIndex
from placement.engine.model import NodeView, Placed, PodRequest
from placement.engine.ranking import trim_logs
from placement.engine.workload import WorkloadProfile, profile_distance

# A learned profile this close to the one in use (total variation distance between the shapes'
# weights) keeps the index's rankings.
PROFILE_TOLERANCE = 0.01


class Known(NamedTuple):
    """A node as last read in full: its version then, its view and its capacity."""

    version: int
    view: NodeView
    capacity: Capacity


class LiveIndex:
    def __init__(self, nodes: Nodes, node_timeout_s: float):
        self._nodes = nodes
        self._node_timeout_s = node_timeout_s
        self._index: CapacityIndex | None = None
        self._fleet: dict[str, Capacity] = {}
        self._workload: WorkloadProfile | None = None
        self.builds = 0  # indexes built: the first, then one per change of the fleet
        self.refreshes = 0  # refreshes from the store
        self.nodes_read = 0  # nodes read in full by them: the first, then only those that moved
        self.generation = 0  # bumped by each refresh (see `reserved`)
        self.refreshed_ms = 0  # when the last refresh read the store
        self._known: dict[str, Known] = {}  # node -> what it was at the version last read
        self.draining: dict[str, int] = {}  # node -> when its drain began, as of the last refresh

    async def current(self) -> CapacityIndex:
        """The index, built from the store on first use."""
        if self._index is None:
            return await self.refresh()
        return self._index

    async def refresh(self) -> CapacityIndex:
        """Bring the index to the store's state: updates for a fleet it holds, a new index for a
        changed one."""
        self.refreshed_ms = now_ms()
        views, moved = await self._live_views()
        self.refreshes += 1
        self.generation += 1
        seen = {v.name: self._known[v.name].capacity for v in views}
        if self._index is None or seen != self._fleet:
            self._index, self._fleet = CapacityIndex(views, workload=self._workload), seen
            self.builds += 1
            return self._index
        for view in views:
            if view.name in moved:
                self._index.update(view)
        trim_logs(self._index)  # updates log group changes; only ranking decisions trim them
        return self._index

    async def _live_views(self) -> tuple[list[NodeView], set[str]]:
        """The views of the nodes a new pod may go to (those that heartbeated within
        node_timeout_s and are not draining), and the names of the nodes whose version moved
        since the last read: only those are read again in full and made new views of; the others
        only get their heartbeat and drain mark."""
        names = await self._nodes.names()
        marks = await self._nodes.marks(names)
        moved = {n for n in names if n not in self._known or self._known[n].version != marks[n].version}
        for usage in await self._nodes.read(sorted(moved)):
            view = node_view(usage)
            self._known[usage.name] = Known(marks[usage.name].version, view, capacity(view))
            self.nodes_read += 1
        for gone in set(self._known) - set(names):
            del self._known[gone]
        self.draining = {n: m.draining_since_ms for n, m in marks.items() if m.draining_since_ms > 0}
        cutoff = self.refreshed_ms - int(self._node_timeout_s * 1000)
        views = [self._known[n].view for n in names
                 if marks[n].heartbeat_ms >= cutoff and n not in self.draining and n in self._known]
        return views, moved

    def reserved(self, placed: Placed, request: PodRequest, decided_at_generation: int) -> None:
        """Apply a commit the ledger accepted for a decision made at that generation. If the
        index was refreshed meanwhile, that read may already hold the commit: leave it to the
        next refresh rather than charge it twice."""
        if self._index is None or decided_at_generation != self.generation:
            return
        try:
            self._index.reserve(placed, request)
        except ValueError:
            self._fleet = {}  # the index disagrees with the ledger: rebuild at the next refresh

    def hold(self, placed: Placed, request: PodRequest) -> None:
        """Charge a decision before its commit, so the decisions after it in a batch see it
        (placement/worker.py); `let_go` undoes it if the ledger refuses. ValueError (nothing
        charged) if the index says it does not fit."""
        if self._index is None:
            raise ValueError("no index yet")
        self._index.reserve(placed, request)

    def committed(self, node: str, version: int) -> None:
        """A `hold` the ledger committed, leaving `node` at `version`. When the version read
        last is the one just before, no one else moved the node since that read, so the index
        (which holds the commit) is what the store holds, and the next refresh need not read
        the node again: at 1,000 placements a second, re-reading the nodes this worker had just
        placed on was most of a refresh (bench/fleet_replay.py)."""
        known = self._known.get(node)
        if known is not None and known.version == version - 1 and self._index is not None:
            self._known[node] = Known(version, self._index.node(node), known.capacity)

    def let_go(self, placed: Placed, request: PodRequest) -> None:
        """Undo a `hold` the ledger refused. The node is read again in full at the next refresh
        whatever happens here (the ledger knew better), so an index rebuilt since the hold, which
        never held it, is left as it is."""
        self._known.pop(placed.node, None)
        try:
            if self._index is not None:
                self._index.release(placed, request)
        except ValueError:
            pass

    def usual_gpu_vram_mib(self) -> int:
        """The vRAM of the fleet's most common GPU size (0 with no GPU)."""
        sizes = Counter(vram for _, _, gpus in self._fleet.values() for _, vram in gpus)
        return sizes.most_common(1)[0][0] if sizes else 0

    def holds(self, cap: NodeCapacity) -> bool:
        """Whether the index has `cap`'s node with that capacity (else it needs a refresh). A
        draining node is left out of the index on purpose: its reports need no refresh."""
        if cap.node in self.draining:
            return True
        gpus = tuple((g.model, g.vram_mib) for g in sorted(cap.gpus, key=lambda g: g.index))
        return self._fleet.get(cap.node) == (cap.cpu_milli, cap.memory_mib, gpus)

    @property
    def workload(self) -> WorkloadProfile | None:
        """The profile decisions are measured against."""
        return self._workload

    def set_workload(self, workload: WorkloadProfile | None) -> None:
        """Measure against `workload` from now on, unless it is within PROFILE_TOLERANCE of the
        profile in use: a new profile drops every ranking and memo table of the index, each then
        rebuilt by a pass over the fleet, and a profile synced every few seconds moves a little
        each time (~8% of a worker's time at 1,213 nodes: bench/fleet_replay.py)."""
        if profile_distance(self._workload, workload) <= PROFILE_TOLERANCE:
            return
        self._workload = workload
        if self._index is not None:
            self._index.set_workload(workload)

