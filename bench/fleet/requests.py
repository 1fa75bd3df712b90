"""The replayed trace as the platform sees it: one function per pod, deployed in the store, and
a `LeaseRequested` per pod on the bus, as the gateway asks for a worker (gateway/dispatcher.py).

Why one function per pod: placement starts `want_pods` minus the function's pods still starting
(placement/scaling.py `pods_to_start`), so a second request for a function whose first pod is
not ready yet starts nothing. A trace pod is a deployment of its own, and so is it here: each
function has `max_pods = 1` and exactly one request, and every request is answered by a pod or
by the function's unplaceable record.

How a trace share is said: the trace gives a GPU share in milli-GPU, a function in vRAM MiB
(`Resources.vram_mib`, per GPU; a spec has no milli field). The trace has no GPU memory at all:
bench/tracesim gives each model a nominal size so that vRAM never binds. A vRAM share is
charged ceil(vram x 1000 / GPU vRAM) milli, so on GPUs of several sizes no single vRAM figure
is the trace's milli on all of them. The simulated agents therefore report every GPU with
GPU_VRAM_MIB (32,000 MiB, a multiple of 1,000), and a share of m milli asks for m x 32 MiB:
charged exactly m milli on every GPU, with vRAM in proportion, never binding - as offline.
Whole GPUs ask for no share (one GPU) or the whole GPU (several, which a spec must size).

The learned workload: offline, the fragmentation-aware policies measure against the trace's
profile (`WorkloadProfile.from_requests` over every pod of the trace). The platform learns its
profile from the pods it was asked for (placement/learned_workload.py, shared through the
store). Before the workers start, the store is given the trace's shape counts as history
(function HISTORY_FN, each count times HISTORY_WEIGHT, with the memory the offline profile
chose for the shape), so the workers read the trace's profile, and the pods they place during
the run (weight 1 each) move it by well under 0.1%. `learned_profile` lets the bench check
that the profile the workers will read equals the offline one.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
from nats.js import JetStreamContext

from bus_schemas import subjects
from bus_schemas.functions import FunctionSpec, Resources, Scaling
from bus_schemas.leases import LeaseRequested
from thaw_core import bus
from thaw_core.clock import now_ms
from thaw_core.store.functions import Functions
from thaw_core.store.workload import ShapeCount, WorkloadCounts
from placement.engine.model import GPU_MILLI, PodRequest
from placement.engine.workload import WorkloadProfile
from placement.learned_workload import LearnedWorkload, shape_of
from placement.requests import pod_request

GPU_VRAM_MIB = 32_000
VRAM_MIB_PER_MILLI = GPU_VRAM_MIB // GPU_MILLI
MIN_MEMORY_MIB = 16  # Resources.memory_mib's floor; the trace has a pod asking for less
HISTORY_FN = "fleet-history"
HISTORY_WEIGHT = 1_000_000
HALF_LIFE_S = 3600.0  # PlacementSettings.workload_half_life_s, the default the workers run with
GATEWAY = "fleet-replay"


def fn_name(i: int) -> str:
    """The function of the i-th request of the run (0-based)."""
    return f"pod-{i:06d}"


def resources(request: PodRequest) -> Resources:
    """`request` (a trace pod, in milli) as a function's resources (module docstring)."""
    cpu, memory = request.cpu_milli, max(request.memory_mib, MIN_MEMORY_MIB)
    models = tuple(sorted(request.gpu_models))
    if request.gpu_count == 0:
        return Resources(gpu_count=0, vram_mib=0, cpu_milli=cpu, memory_mib=memory)
    if request.gpu_count > 1:
        return Resources(gpu_count=request.gpu_count, vram_mib=GPU_VRAM_MIB, gpu_models=models,
                         cpu_milli=cpu, memory_mib=memory)
    vram = 0 if request.is_whole_gpu else request.gpu_milli * VRAM_MIB_PER_MILLI
    return Resources(gpu_count=1, vram_mib=vram, gpu_models=models, cpu_milli=cpu, memory_mib=memory)


def function_spec(name: str, request: PodRequest, policy: str) -> FunctionSpec:
    """A function whose one pod is `request`: never scaled down during the run, no snapshots
    (the mock runtime has none to restore)."""
    return FunctionSpec(name=name, command=("fleet-replay-mock-worker",), resources=resources(request),
                        scaling=Scaling(min_pods=0, max_pods=1, idle_timeout_s=86400),
                        placement_policy=policy, snapshot=False)


async def deploy(store: redis.Redis, specs: list[FunctionSpec], parallel: int = 64) -> None:
    """Every spec through the store's deploy script (what the gateway's deploy API calls)."""
    functions = Functions(store)
    for at in range(0, len(specs), parallel):
        await asyncio.gather(*(functions.put(s) for s in specs[at:at + parallel]))


def history(trace: list[PodRequest], policy: str) -> list[ShapeCount]:
    """The trace's shape counts as the store's workload table holds them (module docstring)."""
    offline = WorkloadProfile.from_requests(trace)
    memory = {(p.cpu_milli, p.gpu_count, p.gpu_milli, p.gpu_models): p.memory_mib for p in offline.pods}
    counts: Counter = Counter()
    first_memory: dict = {}
    for r in trace:
        key = (r.cpu_milli, r.gpu_count, 1000 if r.is_whole_gpu else r.gpu_milli, r.gpu_models)
        counts[key] += 1
        first_memory.setdefault(key, r.memory_mib)
    at = now_ms()
    out = []
    for key, n in counts.items():
        cpu, count, milli, models = key
        shape_request = PodRequest(cpu_milli=cpu, memory_mib=memory.get(key, first_memory[key]), gpu_count=count,
                                   gpu_milli=milli if count == 1 and milli < GPU_MILLI else 0, gpu_models=models)
        spec = function_spec(HISTORY_FN, shape_request, policy)
        out.append(ShapeCount(shape=shape_of(HISTORY_FN, pod_request(spec)), count=float(n * HISTORY_WEIGHT), at_ms=at))
    return out


async def seed_history(store: redis.Redis, table: list[ShapeCount]) -> list[ShapeCount]:
    return await WorkloadCounts(store).add(table, now_ms(), HALF_LIFE_S)


def learned_profile(table: list[ShapeCount]) -> WorkloadProfile | None:
    """The profile a worker reading `table` measures against (placement/learned_workload.py)."""
    learned = LearnedWorkload(HALF_LIFE_S)
    learned.replace(table)
    return learned.profile(max(c.at_ms for c in table), GPU_VRAM_MIB)


def same_profile(a: WorkloadProfile | None, b: WorkloadProfile | None, tolerance: float = 1e-9) -> bool:
    """Equal shapes in equal order, weights equal within `tolerance`."""
    if a is None or b is None:
        return a is b
    key = lambda p: (p.cpu_milli, p.memory_mib, p.gpu_count, p.gpu_milli, p.gpu_models)  # noqa: E731
    return (len(a.pods) == len(b.pods) and all(key(x) == key(y) and abs(x.weight - y.weight) <= tolerance
                                               for x, y in zip(a.pods, b.pods)))


async def publish_requests(js: JetStreamContext, names: list[str],
                           progress: Callable[[int], None] | None = None,
                           settled: Callable[[], Awaitable[None]] | None = None) -> float:
    """One `LeaseRequested` (want_pods 1) per function, in order, each awaited (its PubAck) before
    the next: the LEASES stream holds them in exactly the replay's order. With `settled`, it is
    awaited after each publish too (paced: one request in flight). Returns the
    time.monotonic() of the first publish."""
    first = time.monotonic()
    for i, fn in enumerate(names):
        msg = LeaseRequested(fn=fn, want_pods=1, gateway=GATEWAY, at_ms=now_ms())
        await bus.publish(js, subjects.lease_requested(fn), msg, msg_id=f"{GATEWAY}:{fn}")
        if settled is not None:
            await settled()
        if progress is not None and i % 100 == 99:
            progress(i + 1)
    return first
