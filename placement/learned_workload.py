"""The workload profile placement learns online: which request shapes the platform is asked for,
and how often, with the recent past weighing most. Pure: the worker loads and syncs the counts
(`thaw_core.store.workload`) and hands `profile()` to the index.

The trace replay (bench/trace_replay.py) gives the fragmentation-aware policies the trace's
profile, `WorkloadProfile.from_requests` over every pod of the trace; this is the same profile
over the pods the platform actually asked for, each counted with weight 2^(-age / half-life),
so a shape nobody asks for any more fades out. Counts are kept per (function, shape), so the
table says whose demand a shape is, and a redeployed function's old shape decays on its own.
Decay is computed from timestamps only: a count loaded after a restart is decayed by the time
the worker was away.
"""

from dataclasses import replace

from placement.engine.model import GPU_MILLI, PodRequest
from placement.engine.workload import WorkloadProfile
from thaw_core.store.workload import Shape, ShapeCount

Key = tuple[str, PodRequest]
"""(function, the engine's request for one of its pods)."""


def decayed(count: float, from_ms: int, to_ms: int, half_life_s: float) -> float:
    """`count` as of `from_ms`, decayed to `to_ms` (never grown: a clock behind leaves it)."""
    age_s = max(0, to_ms - from_ms) / 1000
    return count * 0.5 ** (age_s / half_life_s)


def shape_of(fn: str, request: PodRequest) -> Shape:
    return Shape(fn=fn, cpu_milli=request.cpu_milli, memory_mib=request.memory_mib, gpu_count=request.gpu_count,
                 gpu_milli=request.gpu_milli, vram_mib=request.vram_mib, gpu_models=tuple(sorted(request.gpu_models)))


def key_of(shape: Shape) -> Key:
    return shape.fn, PodRequest(cpu_milli=shape.cpu_milli, memory_mib=shape.memory_mib, gpu_count=shape.gpu_count,
                                gpu_milli=shape.gpu_milli, vram_mib=shape.vram_mib,
                                gpu_models=frozenset(shape.gpu_models))


class LearnedWorkload:
    """Decayed counts of the shapes asked for: the shared table as last synced, plus what this
    worker saw since (also kept apart, to be sent at the next sync)."""

    def __init__(self, half_life_s: float):
        if half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, not {half_life_s}")
        self.half_life_s = half_life_s
        self._counts: dict[Key, tuple[float, int]] = {}  # count as of ms
        self._unsynced: dict[Key, tuple[float, int]] = {}

    def observe(self, fn: str, request: PodRequest, now_ms: int) -> None:
        """One more pod of `request` asked for by `fn`, now."""
        for table in (self._counts, self._unsynced):
            count, at_ms = table.get((fn, request), (0.0, now_ms))
            table[(fn, request)] = (decayed(count, at_ms, now_ms, self.half_life_s) + 1, now_ms)

    def counts(self, now_ms: int) -> dict[PodRequest, float]:
        """Each request's count over all functions, decayed to `now_ms`."""
        out: dict[PodRequest, float] = {}
        for (_, request), (count, at_ms) in self._counts.items():
            out[request] = out.get(request, 0.0) + decayed(count, at_ms, now_ms, self.half_life_s)
        return out

    def profile(self, now_ms: int, gpu_vram_mib: int = 0) -> WorkloadProfile | None:
        """The profile to measure fragmentation against; None while nothing was seen (the
        engine then learns from the requests reserved on its index). `gpu_vram_mib`: the
        fleet's usual GPU size, which a vRAM-only share is expressed in (see `in_milli`)."""
        counts: dict[PodRequest, float] = {}
        for request, count in self.counts(now_ms).items():
            shape = in_milli(request, gpu_vram_mib)
            counts[shape] = counts.get(shape, 0.0) + count
        return WorkloadProfile.from_counts(counts) if counts else None

    def take_unsynced(self, now_ms: int) -> list[ShapeCount]:
        """What this worker saw since the last sync, decayed to `now_ms`, and forget it: the
        caller adds it to the store (and `put_back`s it if that fails)."""
        out = [ShapeCount(shape=shape_of(fn, request), count=decayed(count, at_ms, now_ms, self.half_life_s),
                          at_ms=now_ms)
               for (fn, request), (count, at_ms) in self._unsynced.items()]
        self._unsynced = {}
        return out

    def put_back(self, unsent: list[ShapeCount]) -> None:
        """Counts `take_unsynced` gave that never reached the store: send them next time."""
        for c in unsent:
            key = key_of(c.shape)
            count, at_ms = self._unsynced.get(key, (0.0, c.at_ms))
            at = max(at_ms, c.at_ms)
            self._unsynced[key] = (decayed(count, at_ms, at, self.half_life_s)
                                   + decayed(c.count, c.at_ms, at, self.half_life_s), at)

    def replace(self, table: list[ShapeCount]) -> None:
        """The shared table as the store returned it (every worker's counts), plus what this
        worker saw since it asked (not in the table yet)."""
        self._counts = {key_of(c.shape): (c.count, c.at_ms) for c in table}
        for key, (count, at_ms) in self._unsynced.items():
            stored, stored_ms = self._counts.get(key, (0.0, at_ms))
            at = max(at_ms, stored_ms)
            self._counts[key] = (decayed(stored, stored_ms, at, self.half_life_s)
                                 + decayed(count, at_ms, at, self.half_life_s), at)


def in_milli(request: PodRequest, gpu_vram_mib: int) -> PodRequest:
    """A vRAM-only share (what a function's resources name) with the milli it is charged on a
    GPU of `gpu_vram_mib` (`PodRequest.charge_for`). The profile's shapes are FGD's, by milli
    per GPU; a vRAM-only share has none, so every such share would be one shape of 0 milli,
    one that fits any GPU and so never counts a GPU fragmented."""
    if request.gpu_count != 1 or request.is_whole_gpu or request.gpu_milli or gpu_vram_mib <= 0:
        return request
    milli = min(GPU_MILLI, request.charge_milli(gpu_vram_mib))
    return replace(request, gpu_milli=milli)
