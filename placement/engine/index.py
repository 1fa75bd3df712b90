"""An incremental capacity index: the fleet grouped so a decision need not visit every node.

Nodes in the same state - same GPU models and sizes, same free milli and free vRAM on every
GPU index, same free CPU and memory - form a *group*.  Every question a filter or a score asks
has the same answer for every member of a group, so it is asked once per group and remembered
(`Group.memo`), and a decision ranks groups, not nodes.  Groups are immutable states: when a
node's capacity changes it leaves its group for another (made on demand, and appended to
`created`; every change of membership to `touched`: these logs let per-request-shape
rankings catch up incrementally, see `ranking.py`, which also trims them).
`reserve` and `release` cost O(log n) plus a short list shift.

The index is the only mutable object in the engine.  Decisions read it and may fill its memo
tables (pure functions of a group's state, or of the workload profile, so never stale); only
`reserve`/`release` change capacity.  It is not thread-safe: one decision or commit at a time.
"""
from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from placement.engine.model import GPU_MILLI, GpuView, NodeView, Placed, PodRequest
from placement.engine.workload import WorkloadProfile


@dataclass(frozen=True, slots=True)
class Layout:
    """What a node's GPUs are, regardless of use: model and vRAM per index."""

    models: tuple[str, ...]
    vram_mib: tuple[int, ...]

    @property
    def model_set(self) -> frozenset[str]:
        return frozenset(self.models)


# A group's identity: (layout, free milli per GPU, free vRAM MiB per GPU, free CPU milli, free memory MiB).
GroupKey = tuple[Layout, tuple[int, ...], tuple[int, ...], int, int]


class Node:
    """Mutable capacity of one node (internal; callers get `NodeView`s)."""

    __slots__ = ("name", "ordinal", "cpu_milli", "cpu_free", "memory_mib", "mem_free",
                 "layout", "milli_free", "vram_free", "group")

    def __init__(self, view: NodeView, ordinal: int, layout: Layout) -> None:
        self.name = view.name
        self.ordinal = ordinal
        self.cpu_milli = view.cpu_milli
        self.cpu_free = view.cpu_free_milli
        self.memory_mib = view.memory_mib
        self.mem_free = view.memory_free_mib
        self.layout = layout
        self.milli_free = tuple(g.milli_free for g in view.gpus)
        self.vram_free = tuple(g.vram_free_mib for g in view.gpus)
        self.group: Group | None = None

    def sort_key(self) -> tuple[int, int, int]:
        return (self.cpu_free, self.mem_free, self.ordinal)

    def view(self) -> NodeView:
        gpus = tuple(
            GpuView(i, model, vram, vram - vfree, GPU_MILLI - mfree)
            for i, (model, vram, mfree, vfree) in enumerate(
                zip(self.layout.models, self.layout.vram_mib, self.milli_free, self.vram_free)
            )
        )
        return NodeView(self.name, self.cpu_milli, self.cpu_milli - self.cpu_free,
                        self.memory_mib, self.memory_mib - self.mem_free, gpus)


class Group:
    """Nodes in one identical state; members sorted by (cpu, mem, ordinal), i.e. by ordinal.

    `memo` holds answers that depend only on the group's GPU state (filter verdicts, GPU
    choices, fragmentation), keyed by whoever asks; it dies with the group.
    """

    __slots__ = ("key", "layout", "milli_free", "vram_free", "keys", "members", "memo",
                 "gpu_milli_free", "max_milli_free", "free_run", "seq", "alive")

    def __init__(self, key: GroupKey, layout: Layout, milli_free: tuple[int, ...],
                 vram_free: tuple[int, ...]) -> None:
        self.key = key
        self.layout = layout
        self.milli_free = milli_free
        self.vram_free = vram_free
        self.keys: list[tuple[int, int, int]] = []
        self.members: list[Node] = []
        self.memo: dict[Any, Any] = {}
        self.gpu_milli_free = sum(milli_free)
        self.max_milli_free = max(milli_free, default=0)
        self.free_run = _longest_free_run(layout, milli_free, vram_free)
        self.seq = 0
        self.alive = True

    def add(self, node: Node) -> None:
        key = node.sort_key()
        at = bisect.bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.members.insert(at, node)
        node.group = self

    def remove(self, node: Node) -> None:
        at = bisect.bisect_left(self.keys, node.sort_key())
        del self.keys[at]
        del self.members[at]
        node.group = None

    def first_fitting(self, cpu_milli: int, memory_mib: int) -> int:
        """Position of the first member (fewest free CPU) with enough CPU and memory, or -1."""
        at = bisect.bisect_left(self.keys, (cpu_milli, -1, -1))
        keys = self.keys
        for i in range(at, len(keys)):
            if keys[i][1] >= memory_mib:
                return i
        return -1


def _longest_free_run(layout: Layout, milli_free: tuple[int, ...],
                      vram_free: tuple[int, ...]) -> int:
    best = run = 0
    for mfree, vfree, vram in zip(milli_free, vram_free, layout.vram_mib):
        run = run + 1 if (mfree == GPU_MILLI and vfree == vram) else 0
        best = max(best, run)
    return best


class CapacityIndex:
    """The fleet's free capacity, grouped by GPU state (see module docstring).

    Contract: `reserve(placed, request)` charges exactly what `decide` promised (the request's
    CPU and memory on the node, `placed.gpu_milli` and `placed.vram_mib` on each GPU in
    `placed.gpus`) and raises `ValueError` without changing anything if that would
    over-commit; `release` gives exactly that back, so reserve then release restores the
    view bit for bit.
    """

    def __init__(self, nodes: Iterable[NodeView], workload: WorkloadProfile | None = None) -> None:
        """`workload`: the expected `WorkloadProfile` for fragmentation-aware policies; when
        None they learn it from the requests reserved here (`seen`)."""
        self._nodes: dict[str, Node] = {}
        self._order: list[Node] = []
        self._groups: dict[GroupKey, Group] = {}
        self._layouts: dict[Layout, Layout] = {}
        self.workload = workload
        self.seen: Counter[PodRequest] = Counter()
        self.memo: dict[Any, Any] = {}
        self.created: list[Group] = []
        self.created_offset = 0
        self.touched: list[Group] = []
        self.touched_offset = 0
        self.version = 0
        for view in nodes:
            self._add(view)
        self.max_cpu_milli = max((n.cpu_milli for n in self._order), default=1) or 1
        self.max_gpu_milli = GPU_MILLI * max((len(n.milli_free) for n in self._order), default=1) or 1
        self.total_cpu_milli = sum(n.cpu_milli for n in self._order)
        self.total_memory_mib = sum(n.memory_mib for n in self._order)
        self.total_gpu_milli = GPU_MILLI * sum(len(n.milli_free) for n in self._order)

    def _add(self, view: NodeView) -> None:
        if view.name in self._nodes:
            raise ValueError(f"duplicate node name {view.name!r}")
        layout = Layout(tuple(g.model for g in view.gpus), tuple(g.vram_mib for g in view.gpus))
        layout = self._layouts.setdefault(layout, layout)
        node = Node(view, len(self._order), layout)
        self._nodes[node.name] = node
        self._order.append(node)
        self._join(node)

    def _join(self, node: Node) -> None:
        key = (node.layout, node.milli_free, node.vram_free, node.cpu_free, node.mem_free)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(key, node.layout, node.milli_free, node.vram_free)
            group.seq = self.created_offset + len(self.created)
            self.created.append(group)
        elif node.ordinal < group.members[0].ordinal:
            self.created.append(group)  # its first member changes: rankings re-push it
        group.add(node)
        self.touched.append(group)

    def is_live(self, group: Group) -> bool:
        """True while `group` is a current group of this index (it has members)."""
        return group.alive

    def forget_logs(self, created_upto: int, touched_upto: int) -> None:
        """Drop log entries before these absolute positions (every reader is past them)."""
        cut = max(0, created_upto - self.created_offset)
        del self.created[:cut]
        self.created_offset += cut
        cut = max(0, touched_upto - self.touched_offset)
        del self.touched[:cut]
        self.touched_offset += cut

    def _leave(self, node: Node) -> None:
        group = node.group
        assert group is not None
        group.remove(node)
        self.touched.append(group)
        if not group.members:
            del self._groups[group.key]
            group.memo.clear()
            group.alive = False

    # -- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._order)

    def node(self, name: str) -> NodeView:
        """The current view of node `name`; KeyError if unknown."""
        return self._nodes[name].view()

    def nodes(self) -> tuple[NodeView, ...]:
        """Views of every node, in the order they were given."""
        return tuple(n.view() for n in self._order)

    def groups(self) -> Iterable[Group]:
        """Current groups (internal, read-only for callers)."""
        return self._groups.values()

    def internal(self, name: str) -> Node:
        """The mutable record of node `name` (for engine modules; do not change it)."""
        return self._nodes[name]

    def ordered(self) -> list[Node]:
        """Internal node records in the order given (for engine modules; read-only)."""
        return self._order

    # -- committing --------------------------------------------------------------------------

    def reserve(self, placed: Placed, request: PodRequest) -> None:
        """Charge `request` on `placed`; ValueError (nothing changed) if it does not fit."""
        node = self._nodes[placed.node]
        self._check_gpus(node, placed)
        if node.cpu_free < request.cpu_milli or node.mem_free < request.memory_mib:
            raise ValueError(f"{node.name}: CPU or memory would be over-committed by {request}")
        self._apply(node, placed, request, sign=-1)
        self.seen[request] += 1

    def release(self, placed: Placed, request: PodRequest) -> None:
        """Give back what `reserve(placed, request)` charged; ValueError if it was not held."""
        node = self._nodes[placed.node]
        layout = node.layout
        for i in placed.gpus:
            if (node.milli_free[i] + placed.gpu_milli > GPU_MILLI
                    or node.vram_free[i] + placed.vram_mib > layout.vram_mib[i]):
                raise ValueError(f"{node.name}: GPU {i} would hold more than its capacity")
        if (node.cpu_free + request.cpu_milli > node.cpu_milli
                or node.mem_free + request.memory_mib > node.memory_mib):
            raise ValueError(f"{node.name}: CPU or memory would exceed capacity")
        self._apply(node, placed, request, sign=+1)
        if self.seen[request] > 0:
            self.seen[request] -= 1

    def update(self, view: NodeView) -> bool:
        """Make node `view.name`'s use that of `view` (a fresh report of what is charged on it,
        e.g. from a ledger someone else also writes); True if anything changed.

        Only use changes here: ValueError (nothing changed) for a node this index does not hold
        or whose capacity (GPU models and sizes, CPU, memory) differs from `view`'s.  The
        fleet's capacities are fixed for an index's life because memo tables depend on them
        (scarcity, the fleet's totals); a changed fleet needs a new index.
        """
        node = self._nodes.get(view.name)
        if node is None:
            raise ValueError(f"no node {view.name!r} in this index")
        layout = Layout(tuple(g.model for g in view.gpus), tuple(g.vram_mib for g in view.gpus))
        if (layout, view.cpu_milli, view.memory_mib) != (node.layout, node.cpu_milli, node.memory_mib):
            raise ValueError(f"{view.name}: capacity differs from this index's; build a new index")
        milli = tuple(g.milli_free for g in view.gpus)
        vram = tuple(g.vram_free_mib for g in view.gpus)
        if (node.cpu_free, node.mem_free, node.milli_free, node.vram_free) == (
                view.cpu_free_milli, view.memory_free_mib, milli, vram):
            return False
        self._leave(node)
        node.cpu_free, node.mem_free = view.cpu_free_milli, view.memory_free_mib
        node.milli_free, node.vram_free = milli, vram
        self._join(node)
        self.version += 1
        return True

    def set_workload(self, workload: WorkloadProfile | None) -> None:
        """Measure fragmentation against `workload` from now on (None: learn it from `seen`).
        Every memo table of the index goes with the old profile: the rankings were scored
        with it."""
        if workload == self.workload:
            return
        self.workload = workload
        self.memo.clear()

    def _check_gpus(self, node: Node, placed: Placed) -> None:
        if len(set(placed.gpus)) != len(placed.gpus):
            raise ValueError(f"{node.name}: GPU indices repeat in {placed.gpus}")
        for i in placed.gpus:
            if not 0 <= i < len(node.milli_free):
                raise ValueError(f"{node.name}: no GPU {i}")
            if node.milli_free[i] < placed.gpu_milli or node.vram_free[i] < placed.vram_mib:
                raise ValueError(f"{node.name}: GPU {i} would be over-committed by {placed}")

    def _apply(self, node: Node, placed: Placed, request: PodRequest, sign: int) -> None:
        self._leave(node)
        node.cpu_free += sign * request.cpu_milli
        node.mem_free += sign * request.memory_mib
        if placed.gpus:
            milli, vram = list(node.milli_free), list(node.vram_free)
            for i in placed.gpus:
                milli[i] += sign * placed.gpu_milli
                vram[i] += sign * placed.vram_mib
            node.milli_free, node.vram_free = tuple(milli), tuple(vram)
        self._join(node)
        self.version += 1
