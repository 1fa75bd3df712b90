"""GPU memory in process snapshots: the cuda-checkpoint orchestration around CRIU.

What these tests prove, and what they do not. There is no NVIDIA GPU here, so `cuda-checkpoint`
is a STAND-IN: a small script written into each test's tmp dir that keeps a fake CUDA state per
pid ("running" / "checkpointed"), records every call, and can be told to fail. The worker is the
CPU reference worker, dumped and restored with real CRIU. So these tests check the
ORCHESTRATION only: which pid is toggled, in what order around the dump, what a failing toggle
does to the snapshot and to the worker, and which nodes a GPU snapshot is offered to.
That device memory really survives `cuda-checkpoint --toggle` + CRIU dump + restore + toggle is
NOT proven here; it needs an NVIDIA GPU, driver 550+ and NVIDIA's cuda-checkpoint.
"""

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bus_schemas import redis_keys as K
from bus_schemas.snapshots import SnapshotRequested, SnapshotRestore
from snapshot_workers import Worker, infer, kill_pid, pid_alive, wait_answers
from snapshotter import criu as criu_mod
from snapshotter import procs
from snapshotter.capture import capture_process
from snapshotter.cuda_state import CudaCheckpoint
from snapshotter.dumps import Dumps
from snapshotter.errors import CriuFailed
from snapshotter.manifest import Manifest
from snapshotter.restores import Restores
from snapshotter.retention import RetentionPolicy
from snapshotter.settings import SnapshotterSettings
from thaw_core import process_refs
from thaw_core.store.snapshots import SnapshotCatalog, SnapshotIndex, announce_snapshotter

from conftest import free_port

pytestmark = pytest.mark.criu

NODE, FN, POD = "node-a", "torchlike", "pod-1"

STAND_IN = '''#!{python}
"""Stand-in for NVIDIA's cuda-checkpoint (tests only): a fake CUDA state per pid, every call
appended to ./calls as "<op> <pid>". A line "<op> <n>" in ./fail makes the n-th call of <op>
exit 1 leaving the state as it was; "<op> <n> half" changes the state first, then exits 1."""
import sys
from pathlib import Path

here = Path(__file__).parent
args = sys.argv[1:]
pid = args[args.index("--pid") + 1]
op = ("get-state" if "--get-state" in args else "toggle" if "--toggle" in args
      else args[args.index("--action") + 1])
with open(here / "calls", "a") as f:
    f.write(f"{{op}} {{pid}}\\n")
count_file = here / f"count-{{op}}"
n = int(count_file.read_text()) + 1 if count_file.exists() else 1
count_file.write_text(str(n))

state_file, default = here / f"state-{{pid}}", here / "default-state"
state = (state_file if state_file.exists() else default).read_text().strip()
rules = [r.split() for r in (here / "fail").read_text().splitlines()] if (here / "fail").exists() else []
rule = next((r for r in rules if r[:2] == [op, str(n)]), None)
nxt = {{"toggle": {{"running": "checkpointed", "checkpointed": "running"}},
        "unlock": {{"locked": "running"}}}}.get(op, {{}}).get(state, state)
if rule and "half" not in rule:
    sys.exit(f"stand-in: {{op}} failed")
state_file.write_text(nxt)
if rule:
    sys.exit(f"stand-in: {{op}} failed halfway")
if op == "get-state":
    print(state)
'''


class StandIn:
    """The stand-in cuda-checkpoint of one test, and what it saw."""

    def __init__(self, root: Path, fail: str = "", restored_state: str = "running"):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.path = root, root / "cuda-checkpoint"
        self.path.write_text(STAND_IN.format(python=sys.executable))
        self.path.chmod(0o755)
        (root / "fail").write_text(fail.replace(";", "\n"))
        (root / "default-state").write_text(restored_state)  # a pid it has not seen before
        (root / "calls").touch()

    def calls(self) -> list[str]:
        return (self.root / "calls").read_text().split("\n")[:-1]

    def state(self, pid: int) -> str:
        f = self.root / f"state-{pid}"
        return f.read_text() if f.exists() else (self.root / "default-state").read_text()


@pytest.fixture
async def r(valkey_url):
    """A client as the services have it (strings, not bytes)."""
    client = aioredis.from_url(valkey_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


class FakeJetStream:
    def __init__(self):
        self.published: list[str] = []

    async def publish(self, subject, payload, headers=None, timeout=None):
        self.published.append(subject)


def record_dumps(calls_file: Path, fail: bool):
    """criu dump as the snapshotter calls it, with "criu-dump <pid>" put into the stand-in's
    call log, so the order of toggles and dump can be read from one list."""
    real = criu_mod.dump

    async def dump(criu, pid, image_dir, **kw):
        with calls_file.open("a") as f:
            f.write(f"criu-dump {pid}\n")
        if fail:
            raise CriuFailed("criu dump", f"could not checkpoint pid {pid} (told to fail by the test)", exit_code=1)
        return await real(criu, pid, image_dir, **kw)
    return dump


# --- dump: on, dump, off -----------------------------------------------------------------

SUSPEND = ["get-state", "toggle", "get-state"]  # running? -> toggle -> checkpointed?
RESUME = ["get-state", "toggle", "get-state"]  # checkpointed? -> toggle -> running?
DUMP = ["criu-dump"]


@dataclass(frozen=True)
class DumpCase:
    pod_gpus: str  # the pod record's GPU indices (what the agent put in CUDA_VISIBLE_DEVICES)
    node_has_cuda_checkpoint: bool
    fail: str  # stand-in failure rules, ";"-separated
    criu_fails: bool
    calls: list[str]  # stand-in calls and the dump, in order, all for the worker's pid
    snapshot_gpu: bool | None  # the manifest's `gpu`; None: no snapshot was taken
    error: str  # in the function's snapshot_failure record
    cuda_state_after: str  # of the worker, as the stand-in holds it


DUMP_CASES = {
    "a GPU worker is toggled off its GPU, dumped, and toggled back":
        DumpCase("0", True, "", False, SUSPEND + DUMP + RESUME, True, "", "running"),
    "a worker given no GPU is dumped plainly":
        DumpCase("", True, "", False, DUMP, False, "", "running"),
    "on a node without cuda-checkpoint a GPU pod is dumped plainly (CRIU alone)":
        DumpCase("0", False, "", False, DUMP, False, "", "running"),
    "a failing toggle fails the snapshot before the dump, worker still on its GPU":
        DumpCase("0", True, "toggle 1", False, SUSPEND, None, "running on its GPU again", "running"),
    "a toggle that fails halfway is toggled back, and the snapshot fails":
        DumpCase("0", True, "toggle 1 half", False, ["get-state", "toggle", "get-state", "toggle", "get-state"],
                 None, "running on its GPU again", "running"),
    "a failing dump still toggles the worker back":
        DumpCase("0", True, "", True, SUSPEND + DUMP + RESUME, None, "told to fail", "running"),
    "a failing toggle back is tried again, and the snapshot is kept once it works":
        DumpCase("0", True, "toggle 2", False, SUSPEND + DUMP + ["get-state", "toggle"] + RESUME, True, "",
                 "running"),
    "a toggle back that fails twice fails the snapshot and says the worker is stuck":
        DumpCase("0", True, "toggle 2;toggle 3", False, SUSPEND + DUMP + ["get-state", "toggle"] * 2, None,
                 "NOT moved back onto its GPU", "checkpointed"),
}


@pytest.fixture(scope="module")
def warm_worker(tmp_path_factory):
    """One cold-started worker, dumped (left running) by every dump case."""
    port = free_port()
    w = Worker(port, tmp_path_factory.mktemp("gpu-worker") / "worker.log")
    wait_answers(port)
    yield w
    w.kill()


@pytest.mark.parametrize("case", DUMP_CASES.values(), ids=DUMP_CASES.keys())
async def test_dump(case: DumpCase, criu, r, tmp_path, warm_worker, monkeypatch):
    w, stand_in = warm_worker, StandIn(tmp_path / "cuda", case.fail)
    monkeypatch.setattr(criu_mod, "dump", record_dumps(stand_in.root / "calls", case.criu_fails))
    await r.hset(K.pod(POD), mapping={"fn": FN, "node": NODE, "state": "idle", "gpus": case.pod_gpus,
                                      "runtime_ref": process_refs.ref_of(w.pid), "endpoint": f"http://127.0.0.1:{w.port}"})
    js = FakeJetStream()
    settings = SnapshotterSettings(node=NODE, nats_url="", redis_url="", state_dir=tmp_path / "state")
    cuda = CudaCheckpoint(str(stand_in.path)) if case.node_has_cuda_checkpoint else None
    dumps = Dumps(settings, criu, js, r, asyncio.Lock(), None, cuda)

    await dumps.on_requested(SnapshotRequested(fn=FN, pod=POD, node=NODE, at_ms=0), "")

    assert stand_in.calls() == [f"{c} {w.pid}" for c in case.calls]
    indexed = await SnapshotIndex(r).latest(FN)
    if case.snapshot_gpu is None:
        assert indexed is None and js.published == []
        assert case.error in await r.hget(K.snapshot_failure(FN), "error")
    else:
        assert indexed.gpu is case.snapshot_gpu and len(js.published) == 1
        assert indexed.gpu_indices == (case.pod_gpus if case.snapshot_gpu else "")
    # Whatever happened, the original keeps serving (and, by the stand-in's account, on its GPU
    # unless the last row's double failure left it checkpointed).
    assert pid_alive(w.pid) and "served" in await asyncio.to_thread(infer, w.port)
    assert stand_in.state(w.pid) == case.cuda_state_after


# --- restore: toggle the restored worker back before it is reported ready -------------------

@dataclass(frozen=True)
class RestoreCase:
    node_has_cuda_checkpoint: bool
    pod_gpus: str
    fail: str
    restored_reports: str  # the CUDA state the stand-in reports for the restored pid
    ok: bool
    calls: list[str]  # stand-in calls, all for the restored worker's pid
    error: str


RESTORE_CASES = {
    "the restored worker is toggled back onto its GPU before the answer":
        RestoreCase(True, "0", "", "checkpointed", True, RESUME, ""),
    "a restored worker already running (CRIU's cuda_plugin resumed it) is left alone":
        RestoreCase(True, "0", "", "running", True, ["get-state"], ""),
    "a failing toggle stops the restored worker and the pod cold-starts":
        RestoreCase(True, "0", "toggle 1", "checkpointed", False, ["get-state", "toggle"],
                    "could not be moved back onto its GPU"),
    "a pod holding another GPU is refused before CRIU runs":
        RestoreCase(True, "1", "", "checkpointed", False, [], "GPU(s) 0, pod holds 1"),
    "a node without cuda-checkpoint refuses a GPU image before CRIU runs":
        RestoreCase(False, "0", "", "checkpointed", False, [], "no cuda-checkpoint"),
}


@pytest.fixture(scope="module")
def gpu_snapshot(tmp_path_factory, criu, valkey_url):
    """A snapshot taken on the GPU path (stand-in), whose worker was then killed, so its port
    is free for restores: (settings holding it, manifest, tiers)."""
    root = tmp_path_factory.mktemp("gpu-snapshot")
    settings = SnapshotterSettings(node=NODE, nats_url="", redis_url="", state_dir=root / "state")
    port = free_port()
    w = Worker(port, root / "worker.log")
    try:
        wait_answers(port)
        infer(port)  # served 2 at the dump; a restored copy answers 3

        async def take():
            client = aioredis.from_url(valkey_url, decode_responses=True)
            try:
                return await capture_process(criu, settings.store(), SnapshotIndex(client), fn=FN, node=NODE,
                                             pid=w.pid, port=port, work_dir=settings.work_dir,
                                             policy=RetentionPolicy(), cuda=CudaCheckpoint(
                                                 str(StandIn(root / "cuda").path)), gpus=(0,))
            finally:
                await client.aclose()
        m, tiers = asyncio.run(take())
    finally:
        w.kill()
    assert m.gpu and m.gpu_indices == "0"
    return settings, m, tiers


@pytest.mark.parametrize("case", RESTORE_CASES.values(), ids=RESTORE_CASES.keys())
async def test_restore(case: RestoreCase, criu, r, tmp_path, gpu_snapshot):
    settings, m, tiers = gpu_snapshot
    await SnapshotIndex(r).add(m, tiers)
    await r.hset(K.pod(POD), mapping={"fn": FN, "node": NODE, "state": "restoring", "gpus": case.pod_gpus})
    stand_in = StandIn(tmp_path / "cuda", case.fail, restored_state=case.restored_reports)
    cuda = CudaCheckpoint(str(stand_in.path)) if case.node_has_cuda_checkpoint else None
    restores = Restores(settings, criu, r, asyncio.Lock(), None, cuda)

    answer = await restores.restore(SnapshotRestore(pod=POD, fn=FN, snapshot=m.id))
    try:
        await _check_restore(case, answer, stand_in, m)
    finally:  # a restored worker never outlives its test, whatever failed
        if answer.runtime_ref:
            kill_pid(int(answer.runtime_ref.split(":")[0]))


async def _check_restore(case: RestoreCase, answer, stand_in: StandIn, m: Manifest) -> None:
    restored = {int(line.split()[1]) for line in stand_in.calls()}
    assert len(restored) <= 1, "only the restored worker's pid is toggled"
    pid = restored.pop() if restored else None
    assert stand_in.calls() == [f"{c} {pid}" for c in case.calls]
    assert answer.ok is case.ok, answer.error
    if case.ok:
        assert answer.runtime_ref.startswith(f"{pid}:") and stand_in.state(pid) == "running"
        assert (await asyncio.to_thread(wait_answers, m.port, 10))["served"] == 3  # its warm state
    else:
        assert case.error in answer.error
        if pid is not None:  # CRIU ran: its worker must be gone again, never half-restored
            for _ in range(100):
                if not pid_alive(pid):
                    break
                await asyncio.sleep(0.02)
            assert not pid_alive(pid)
        assert not procs.port_in_use(m.port)


# --- placement's view: a GPU snapshot needs "cuda-checkpoint" on the node --------------------

OFFER_CASES = [
    # snapshot holds GPU memory, what the node's snapshotter announces, offered to that node
    (False, ("criu",), True),
    (True, ("criu",), False),
    (True, ("criu", "cuda-checkpoint"), True),
    (False, ("criu", "cuda-checkpoint"), True),
]


@pytest.mark.parametrize("gpu, announced, offered", OFFER_CASES)
async def test_a_gpu_snapshot_is_offered_only_to_a_node_with_cuda_checkpoint(r, gpu, announced, offered):
    m = Manifest(id="torchlike-1-abc", fn=FN, node=NODE, runtime="process", created_ms=1, sha256="x",
                 size_bytes=1, raw_bytes=1, arch="x86_64", kernel="k", criu_version="4.2.1", gpu=gpu,
                 gpu_indices="0" if gpu else "", spec_digest="d")
    await SnapshotIndex(r).add(m, ("local",))
    await announce_snapshotter(r, NODE, announced, ttl_s=30)
    found = await SnapshotCatalog(r).usable(FN, "d", NODE)
    assert (found is not None) is offered
    assert found is None or found.gpu is gpu


def test_a_snapshotter_announces_cuda_checkpoint_where_detected():
    s = SnapshotterSettings(node=NODE, nats_url="", redis_url="", state_dir=Path("/nonexistent"))
    assert s.capabilities(("cuda-checkpoint",)) == ("criu", "cuda-checkpoint")
    assert s.capabilities() == ("criu",)
