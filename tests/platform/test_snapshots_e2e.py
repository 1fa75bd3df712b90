"""Snapshots through the whole platform, on real processes and real CRIU: a function's first warm
worker is checkpointed once, a later pod is restored from it, and every problem with a snapshot
ends in a cold start that answers, never in a broken worker.

Needs root and CRIU 4.x (`sudo infra/install-criu.sh`); without them these tests FAIL with that
hint rather than skip, as tests/snapshots/ do.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus_schemas import redis_keys as K
from thaw_core.store import events

from tests.conftest import eventually
from tests.platform.conftest import deploy, invoke, thaw_ls
from tests.platform.harness import Harness

pytestmark = pytest.mark.criu
WARM = str(Path(__file__).resolve().parent / "warm_worker.py")


@pytest.fixture(scope="module", autouse=True)
def criu_works():
    hint = "run `sudo infra/install-criu.sh` (CRIU 4.x into /usr/local/sbin) and run the tests as root"
    if os.geteuid() != 0:
        pytest.fail(f"snapshot tests need root: {hint}")
    try:
        out = subprocess.run(["/usr/local/sbin/criu", "check"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"no usable CRIU ({exc}): {hint}")
    if out.returncode:
        pytest.fail(f"`criu check` fails: {out.stdout[-300:]}{out.stderr[-300:]}: {hint}")


@pytest.fixture
async def snap_platform(platform: Harness):
    platform.start("snapshotter")
    await eventually(lambda: _snapshotter_up(platform), 20, what="the snapshotter to announce itself")
    return platform


async def _snapshotter_up(h: Harness) -> bool:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(h.redis_url, decode_responses=True)
    try:
        return bool(await r.get(K.snapshotter(h.node)))
    finally:
        await r.aclose()


def warm_spec() -> dict:
    return {"name": "warm", "command": ["{python}", WARM], "env": {"WARM_IMPORT_S": "2"},
            "resources": {"gpu_count": 0, "cpu_milli": 100, "memory_mib": 128},
            "scaling": {"max_pods": 1, "idle_timeout_s": 3, "start_timeout_s": 20}}


class Watch:
    """Core subscriptions to pod states and snapshot results, collected as they arrive."""

    def __init__(self):
        self.states: list[dict] = []
        self.ready: list[dict] = []

    async def start(self, url: str):
        self.nc = await nats.connect(url)

        async def on_state(msg):
            self.states.append(json.loads(msg.data))

        async def on_ready(msg):
            self.ready.append(json.loads(msg.data))

        await self.nc.subscribe("pod.state.>", cb=on_state)
        await self.nc.subscribe("snapshot.ready.>", cb=on_ready)
        return self

    def states_of(self, pod: str) -> list[str]:
        """The pod's states in the order the store made them (events of one pod come from
        several services, so they may arrive in another)."""
        return [s["state"] for s in sorted((s for s in self.states if s["pod"] == pod), key=lambda s: s["seq"])]


async def _timed_call(http, h: Harness) -> tuple[float, dict, str]:
    t0 = time.perf_counter()
    status, body, pod = await invoke(http, h.url, "warm", b"{}")
    took = time.perf_counter() - t0
    assert status == 200, body
    return took, json.loads(body), pod


async def _warm_then_scale_to_zero(http, h: Harness, watch: Watch) -> tuple[float, dict, str, dict]:
    """Deploy, cold-start with one call, wait for the snapshot and the scale to zero."""
    await deploy(http, h.url, warm_spec())
    cold_s, cold, pod = await _timed_call(http, h)
    ready = await eventually(lambda: watch.ready, 30, what="snapshot.ready.warm")
    await eventually(lambda: "stopped" in watch.states_of(pod), 30, what=f"{pod} to scale to zero")
    return cold_s, cold, pod, ready[0]


async def _pod_events(h: Harness, pod: str) -> list[dict]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(h.redis_url, decode_responses=True)
    try:
        return await events.read(r, pod)
    finally:
        await r.aclose()


async def test_a_later_pod_is_restored_from_the_first_warm_workers_snapshot(snap_platform, http, r):
    h = snap_platform
    watch = await Watch().start(h.nats.url)
    try:
        cold_s, cold, first_pod, ready = await _warm_then_scale_to_zero(http, h, watch)
        assert ready["pod"] == first_pod and ready["tiers"] == ["local", "shared"]

        restore_s, warm, second_pod = await _timed_call(http, h)
        assert second_pod != first_pod
        assert warm["loaded_at"] == cold["loaded_at"], "a restored worker keeps the state it was snapshotted with"
        assert "restoring" in watch.states_of(second_pod)
        assert "starting" not in watch.states_of(second_pod)
        record = await r.hgetall(K.pod(second_pod))
        assert record["snapshot"] == ready["snapshot"] and record["restored_from"] == ready["snapshot"]
        assert [e["event"] for e in await _pod_events(h, second_pod)] == ["restored"]
        async with http.get(h.url + "/v1/snapshots") as resp:
            listed = (await resp.json())["snapshots"]
        assert [(s["id"], s["tiers"]) for s in listed] == [(ready["snapshot"], ["local", "shared"])]
        key = http.headers["Authorization"].split()[1]
        listing = subprocess.run([sys.executable, "-m", "thaw.cli", "--url", h.url, "--key", key, "snapshots"],
                                 capture_output=True, text=True, timeout=30)
        assert ready["snapshot"] in listing.stdout and "local,shared" in listing.stdout, listing
        print(f"\nthrough the platform: cold start {cold_s * 1000:.0f} ms, restore {restore_s * 1000:.0f} ms "
              f"(snapshot {ready['size_bytes'] / 2**20:.1f} MiB, dump {ready['dump_s']:.2f}s)")

        assert (await _timed_call(http, h))[2] == second_pod, "the restored pod serves the next call warm"
        async with http.get(h.url + "/metrics") as resp:
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
        first = _counts(families["thaw_gateway_first_answer_seconds"], "start")
        assert first == {"cold": 1, "restored": 1, "warm": 1}, "each call labelled by what it waited for"
        assert _counts(families["thaw_gateway_request_seconds"], "fn") == {"warm": 3}
        assert _counts(families["thaw_pod_start_seconds"], "start") == {"cold": 1, "restored": 1}
        restored_sum = _sum(families["thaw_pod_start_seconds"], start="restored")
        assert 0 < restored_sum < _sum(families["thaw_pod_start_seconds"], start="cold") + 5
        assert _counts(families["thaw_snapshot_seconds"], "fn") == {"warm": 1}, "snapshot.ready, as the gateway heard it"
        assert _sum(families["thaw_snapshot_seconds"], fn="warm") == pytest.approx(ready["dump_s"])
        pods = {s.labels["state"]: s.value for s in families["thaw_pods"].samples if s.labels["fn"] == "warm"}
        assert pods["idle"] + pods["busy"] == 1 and pods["starting"] == 0
        gpus = [s for s in families["thaw_gpu_vram_mib"].samples if s.labels["node"] == h.node]
        assert sorted((s.labels["gpu"], s.value) for s in gpus) == [("0", 24576), ("1", 24576)]
    finally:
        await watch.nc.close()


def _counts(family, by: str) -> dict[str, int]:
    """Observations per value of label `by` in a histogram family (its _count samples)."""
    return {s.labels[by]: int(s.value) for s in family.samples if s.name.endswith("_count")}


def _sum(family, **labels) -> float:
    return next(s.value for s in family.samples
                if s.name.endswith("_sum") and all(s.labels.get(k) == v for k, v in labels.items()))


async def test_a_corrupt_image_falls_back_to_a_cold_start_that_answers(snap_platform, http, r):
    h = snap_platform
    watch = await Watch().start(h.nats.url)
    try:
        _, cold, _, ready = await _warm_then_scale_to_zero(http, h, watch)
        archives = [*h.snapshot_dir.glob("local/warm/*.tar.zst"), *h.shared_dir.glob("warm/*.tar.zst")]
        assert len(archives) == 2
        for path in archives:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))

        _, answer, pod = await _timed_call(http, h)
        assert answer["loaded_at"] != cold["loaded_at"], "the answer must come from a fresh cold start"
        assert watch.states_of(pod)[:3] == ["pending", "restoring", "starting"]
        failed = [e for e in await _pod_events(h, pod) if e["event"] == "restore_failed"]
        assert failed and "sha256" in failed[0]["detail"], failed
        assert await r.zscore(K.snapshot_index("warm"), ready["snapshot"]) is None, \
            "a corrupt snapshot is dropped, so the next pod does not try it again"
    finally:
        await watch.nc.close()


async def test_a_dead_snapshotter_means_a_cold_start_and_no_broken_worker(snap_platform, http):
    h = snap_platform
    watch = await Watch().start(h.nats.url)
    try:
        _, cold, _, _ = await _warm_then_scale_to_zero(http, h, watch)
        h.kill("snapshotter", signal.SIGKILL)

        _, answer, pod = await _timed_call(http, h)
        assert answer["loaded_at"] != cold["loaded_at"]
        failed = [e for e in await _pod_events(h, pod) if e["event"] == "restore_failed"]
        assert failed and "no snapshotter answers" in failed[0]["detail"], failed
        assert "restoring" in watch.states_of(pod) and "starting" in watch.states_of(pod)
        assert _worker_roots(h) == 1, "exactly one worker runs: the cold-started one"
    finally:
        await watch.nc.close()


def _worker_roots(h: Harness) -> int:
    """Worker processes of this node: inits of their own PID namespace carrying its THAW_NODE."""
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0") if proc.name.isdigit() else []
            status = (proc / "status").read_text() if env else ""
        except OSError:
            continue
        nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
        if f"THAW_NODE={h.node}".encode() in env and len(nspid) > 1 and nspid[-1] == "1":
            count += 1
    return count


__all__ = ["asyncio"]


async def test_a_restarted_snapshotter_stops_restored_workers_nobody_owns(platform: Harness):
    # What a snapshotter killed mid-restore can leave: a namespace-init worker of this node whose
    # parent is not unshare (CRIU detached it) and that no live pod names.
    env = {"PATH": os.environ["PATH"], "THAW_NODE": platform.node, "THAW_POD": "ghost-pod"}
    unshare = subprocess.Popen(["unshare", "--pid", "--fork", "setsid", sys.executable, "-c",
                                "import time; time.sleep(120)"], env=env, stdin=subprocess.DEVNULL)
    children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
    orphan = int((await eventually(lambda: children.read_text().split(), 10, what="unshare's child"))[0])
    unshare.kill()
    unshare.wait()
    assert _worker_roots(platform) == 1

    platform.start("snapshotter")
    await eventually(lambda: _worker_roots(platform) == 0, 20, what=f"orphan worker {orphan} to be stopped")


async def test_snapshots_and_worker_logs_are_readable_by_their_owner_only(snap_platform, http):
    """A snapshot holds the worker's memory (its environment's secrets included)."""
    h = snap_platform
    watch = await Watch().start(h.nats.url)
    try:
        await _warm_then_scale_to_zero(http, h, watch)
    finally:
        await watch.nc.close()
    written = [p for root in (h.snapshot_dir, h.shared_dir, h.root / "agent")
               for p in [root, *root.rglob("*")] if p.exists()]
    assert any(p.suffix == ".zst" for p in written) and any(p.suffix == ".log" for p in written)
    open_to_others = [f"{p} {oct(p.stat().st_mode & 0o777)}" for p in written if p.stat().st_mode & 0o077]
    assert open_to_others == []


def burst_spec(max_pods: int) -> dict:
    return {"name": "burst", "command": ["{python}", str(Path(__file__).resolve().parent / "sandbox_worker.py")],
            "env": {"WARM_IMPORT_S": "2"}, "resources": {"gpu_count": 0, "cpu_milli": 200, "memory_mib": 128},
            "scaling": {"max_pods": max_pods, "concurrency": 1, "idle_timeout_s": 4, "start_timeout_s": 30}}


@pytest.mark.parametrize("copies", [3, 10])
async def test_many_pods_restore_from_one_snapshot_side_by_side_at_addresses_of_their_own(snap_platform, http, r,
                                                                                        copies):
    """Each copy is a fresh sandbox (own PID and network namespaces, own cgroup and address),
    so all of a snapshot's restores run at once; when they have all scaled to zero again, the
    node's reservations are back to nothing and every pod is stopped: the ledger is exact."""
    h = snap_platform
    watch = await Watch().start(h.nats.url)
    try:
        await deploy(http, h.url, burst_spec(copies))
        status, body, first = await invoke(http, h.url, "burst", b"{}")
        assert status == 200, body
        await eventually(lambda: watch.ready, 30, what="snapshot.ready.burst")
        await eventually(lambda: "stopped" in watch.states_of(first), 30, what=f"{first} to scale to zero")

        # concurrency 1: the calls ask for a pod each (one may still serve another's call once free)
        calls = [invoke(http, h.url, "burst", json.dumps({"hold_s": 1.5}).encode()) for _ in range(copies)]
        answers = await asyncio.gather(*calls)
        assert [status for status, _, _ in answers] == [200] * copies, answers
        pods = {s["pod"] for s in watch.states if s["fn"] == "burst" and s["pod"] != first}
        assert len(pods) == copies and {pod for _, _, pod in answers} <= pods
        endpoints = {await r.hget(K.pod(pod), "endpoint") for pod in pods}
        assert len(endpoints) == copies, f"each copy at an address of its own: {endpoints}"
        original = json.loads(body)["loaded_at"]
        assert {json.loads(b)["loaded_at"] for _, b, _ in answers} == {original}, "every copy restored, none cold"
        for pod in pods:
            assert [e["event"] for e in await _pod_events(h, pod)] == ["restored"]
            assert "starting" not in watch.states_of(pod)
        await eventually(lambda: all("stopped" in watch.states_of(p) for p in pods), 60, what="all to scale to zero")
        node = await r.hgetall(K.node(h.node))
        assert (node["cpu_reserved"], node["memory_reserved"]) == ("0", "0"), node
        assert [await r.hget(K.pod(p), "state") for p in pods] in ([None] * copies, ["stopped"] * copies)
    finally:
        await watch.nc.close()


HEAP = str(Path(__file__).resolve().parents[2] / "examples" / "heap" / "worker.py")
UNPRIVILEGED_UFFD = Path("/proc/sys/vm/unprivileged_userfaultfd")


@pytest.fixture
def lazy_restores_allowed():
    """A sandboxed worker restores lazily only with this host setting (snapshotter/lazy_pages.py);
    set for the test, put back after."""
    before = UNPRIVILEGED_UFFD.read_text()
    UNPRIVILEGED_UFFD.write_text("1\n")
    yield
    UNPRIVILEGED_UFFD.write_text(before)


def lazy_daemons(under: Path) -> dict[int, Path]:
    """pid -> work dir of each lazy-pages daemon whose work dir is under `under`."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "lazy-pages" in argv and "-W" in argv and argv[argv.index("-W") + 1].startswith(str(under)):
            found[int(proc.name)] = Path(argv[argv.index("-W") + 1])
    return found


async def test_a_lazy_restore_whose_daemon_dies_fails_its_pod_with_the_reason_and_the_next_pod_restores_eagerly(
        snap_platform, http, r, lazy_restores_allowed):
    h = snap_platform
    watch = await Watch().start(h.nats.url)
    spec = {"name": "heap", "command": ["{python}", HEAP], "env": {"HEAP_MIB": "512"}, "restore": "lazy",
            "invoke_path": "/all", "health_path": "/health",
            "resources": {"gpu_count": 0, "cpu_milli": 100, "memory_mib": 768},
            "scaling": {"max_pods": 1, "idle_timeout_s": 3, "start_timeout_s": 30}}
    work = h.snapshot_dir / "work"
    paused: list[int] = []

    async def pause_the_daemon_once_criu_is_done():
        # SIGSTOP the moment `criu restore` exits (it waits on the daemon until then): the
        # worker runs, and most of its heap is still in the image, which the stopped daemon
        # then never brings in. Killed below, it has died mid-restore, for certain.
        while True:
            daemons = lazy_daemons(work)
            if daemons:
                pid, wd = next(iter(daemons.items()))
                break
            await asyncio.sleep(0.002)
        while not (restore := _cmdlines_naming(wd, b"restore")):  # `criu restore -W wd` started...
            await asyncio.sleep(0.001)
        while _alive(min(restore)):  # ...and is done (followed by pid: its wrapper execs CRIU)
            await asyncio.sleep(0.001)
        os.kill(pid, signal.SIGSTOP)
        paused.append(pid)

    try:
        await deploy(http, h.url, spec)
        status, body, first = await invoke(http, h.url, "heap", b"{}")
        assert status == 200 and json.loads(body)["intact"], body
        await eventually(lambda: watch.ready, 30, what="snapshot.ready.heap")
        await eventually(lambda: "stopped" in watch.states_of(first), 30, what=f"{first} to scale to zero")

        pauser = asyncio.create_task(pause_the_daemon_once_criu_is_done())
        call = asyncio.create_task(invoke(http, h.url, "heap", b"{}"))
        await asyncio.wait_for(pauser, 30)
        lazy_pod = await eventually(lambda: next((s["pod"] for s in watch.states if s["fn"] == "heap"
                                                  and s["state"] == "restoring"), None), 30, what="a restoring pod")
        await eventually(lambda: _restored(h, lazy_pod), 30, what=f"{lazy_pod}'s restore to be answered")
        os.kill(paused[0], signal.SIGKILL)

        status, body, second = await call
        assert status == 200 and json.loads(body)["intact"], body
        assert "failed" in watch.states_of(lazy_pod)
        reason = await r.hget(K.pod(lazy_pod), "reason")
        assert reason and "lazy-pages daemon was killed by signal 9 before all pages were in" in reason, reason
        listing = await asyncio.to_thread(thaw_ls, http, h)
        failed = listing.split("FAILED (last 15 minutes)")[-1]
        assert lazy_pod in failed and "lazy-pages daemon was killed" in failed, listing
        restored = [e["detail"] for e in await _pod_events(h, second) if e["event"] == "restored"]
        assert restored and "eager (a lazy restore of this snapshot failed on this node)" in restored[0], restored
        assert not lazy_daemons(work) and not list(work.glob("lazy-*")), "no daemon or work dir is left"
    finally:
        for pid in paused:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await watch.nc.close()


async def _restored(h: Harness, pod: str) -> bool:
    return any(e["event"] == "restored" for e in await _pod_events(h, pod))


def _cmdlines_naming(path: Path, word: bytes = b"") -> set[int]:
    """Pids whose command line names `path` (and has `word` as an argument, if given)."""
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in argv and (not word or word in argv.split(b"\0")):
            found.add(int(proc.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


async def test_a_restore_is_not_held_up_by_a_dump_of_another_function(snap_platform, http, r):
    """Dumps take the node's dump slot, restores their own: a pod of `warm` restores and answers
    while the node is still checkpointing a 1.5 GiB worker of another function."""
    h = snap_platform
    watch = await Watch().start(h.nats.url)
    log = h.root / "snapshotter.log"
    big = {"name": "heap", "command": ["{python}", HEAP], "env": {"HEAP_MIB": "1536"}, "restore": "eager",
           "invoke_path": "/little", "health_path": "/health",
           "resources": {"gpu_count": 0, "cpu_milli": 100, "memory_mib": 2048},
           "scaling": {"max_pods": 1, "idle_timeout_s": 60, "start_timeout_s": 60}}
    try:
        await _warm_then_scale_to_zero(http, h, watch)
        await deploy(http, h.url, big)
        status, body, heap_pod = await invoke(http, h.url, "heap", b"{}")
        assert status == 200, body
        await eventually(lambda: f"snapshot of {heap_pod}: checkpointing" in log.read_text(), 30,
                         every_s=0.01, what="the big worker's dump to begin")

        _, answer, pod = await _timed_call(http, h)
        text = log.read_text()
        assert f"snapshot of {heap_pod}: checkpointing" in text
        restored = text.index(f"as pod {pod} (")
        dumped = text.find(" of heap: ")  # the dump's last line: stored in its tiers
        assert dumped == -1 or restored < dumped, "the restore waited for the dump"
        assert [e["event"] for e in await _pod_events(h, pod)] == ["restored"]
        await eventually(lambda: " of heap: " in log.read_text(), 60, what="the big dump to finish")
    finally:
        await watch.nc.close()
