"""Lazy restores (snapshotter/lazy_pages.py, restore_modes.py) with real CRIU and a real
lazy-pages daemon, on a worker whose state is anonymous memory (examples/heap).

The worker here is a plain namespace init (root, no sandbox), so no host setting is needed;
tests/platform/test_snapshots_e2e.py runs lazy restores of sandboxed workers."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bus_schemas import redis_keys as K
from bus_schemas.snapshots import SnapshotRestore
from snapshot_workers import REPO, kill_pid, pid_alive
from snapshotter import criu as criu_mod
from snapshotter import lazy_pages, procs, restore_modes
from snapshotter.capture import capture_process
from snapshotter.restores import Restores
from snapshotter.retention import RetentionPolicy
from snapshotter.settings import SnapshotterSettings
from thaw_core.store import events
from thaw_core.store.snapshots import SnapshotIndex

from conftest import free_port
from tests.conftest import eventually

pytestmark = pytest.mark.criu

NODE, FN = "node-lazy", "heap"
HEAP_MIB = 256  # over auto's threshold, and a few tenths of a second of background copying
HEAP_WORKER = REPO / "examples" / "heap" / "worker.py"


def get(port: int, path: str, timeout_s: float = 5.0) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
        return json.loads(r.read())


def wait_answers(port: int, path: str = "/little", timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return get(port, path, timeout_s=2.0)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@pytest.fixture(scope="module")
def heap_snapshot(tmp_path_factory, criu, valkey_url):
    """A snapshot of a heap worker that served one request, whose worker was then killed so its
    port is free for restores: (settings, manifest, tiers)."""
    import redis.asyncio as aioredis

    root = tmp_path_factory.mktemp("lazy")
    settings = SnapshotterSettings(node=NODE, nats_url="", redis_url="", state_dir=root / "state")
    port = free_port()
    fd = os.open(root / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port), "HEAP_MIB": str(HEAP_MIB)}
    try:
        unshare = subprocess.Popen(["unshare", "--pid", "--fork", "setsid", sys.executable, str(HEAP_WORKER)],
                                   env=env, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT)
    finally:
        os.close(fd)
    pid = 0
    try:
        assert wait_answers(port)["served"] == 1
        pid = int(Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()[0])

        async def take():
            client = aioredis.from_url(valkey_url, decode_responses=True)
            try:
                return await capture_process(criu, settings.store(), SnapshotIndex(client), fn=FN, node=NODE,
                                             pid=pid, port=port, work_dir=settings.work_dir,
                                             policy=RetentionPolicy())
            finally:
                await client.aclose()
        m, tiers = asyncio.run(take())
    finally:
        if pid:
            kill_pid(pid)
        unshare.kill()
        unshare.wait(5)
    return settings, m, tiers


@pytest.fixture
async def restores(heap_snapshot, criu, r):
    settings, m, tiers = heap_snapshot
    await SnapshotIndex(r).add(m, tiers)
    restores = Restores(settings, criu, r, asyncio.Lock())
    started: list[int] = []
    # A copy killed by the test before keeps the port for a moment while the kernel closes it.
    assert await gone(lambda: not procs.port_in_use(m.port)), f"port {m.port} stays busy"
    yield restores, m, started
    await restores.close()
    for pid in started:
        kill_pid(pid)


async def restoring(r, pod: str) -> str:
    await r.hset(K.pod(pod), mapping={"fn": FN, "node": NODE, "state": "restoring"})
    return pod


def daemons(work: Path) -> list[int]:
    """Pids of lazy-pages daemons whose work dir is under `work`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"lazy-pages" in argv and any(str(work).encode() in a for a in argv):
            found.append(int(proc.name))
    return found


async def gone(check, timeout_s: float = 10.0) -> bool:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


async def test_a_lazy_restore_answers_with_the_whole_warm_heap_and_its_daemon_cleans_up(restores, r):
    restorer, m, started = restores
    answer = await restorer.restore(SnapshotRestore(pod=await restoring(r, "pod-l1"), fn=FN, snapshot=m.id,
                                                    mode="lazy"))
    assert answer.ok, answer.error
    assert answer.how == "lazy"
    pid = int(answer.runtime_ref.split(":")[0])
    started.append(pid)
    assert (await asyncio.to_thread(get, m.port, "/all")) | {"pid": 0} == \
        {"intact": True, "served": 2, "pid": 0, "heap_mib": HEAP_MIB}  # warm: one call before the dump
    work = restorer.s.work_dir
    assert await gone(lambda: not daemons(work) and not list(work.glob("lazy-*"))), \
        "the daemon exits once every page is in, and its work dir goes with it"
    assert pid_alive(pid)
    await restorer.settled()
    # what auto learns from: how much of the heap the worker faulted in itself (how much depends
    # on the race between its reads and the daemon's copying, so only its range is certain)
    assert 0 < restorer.demand(m.id) <= 1


async def test_auto_restores_a_large_image_lazily_and_eager_means_eager(restores, r):
    restorer, m, started = restores
    auto = await restorer.restore(SnapshotRestore(pod=await restoring(r, "pod-a1"), fn=FN, snapshot=m.id))
    assert auto.ok and auto.how.startswith("lazy (auto:"), auto
    kill_pid(int(auto.runtime_ref.split(":")[0]))
    assert await gone(lambda: not procs.port_in_use(m.port))
    eager = await restorer.restore(SnapshotRestore(pod=await restoring(r, "pod-e1"), fn=FN, snapshot=m.id,
                                                   mode="eager"))
    assert eager.ok and eager.how == "eager", eager
    started.append(int(eager.runtime_ref.split(":")[0]))
    assert (await asyncio.to_thread(get, m.port, "/all"))["intact"]


async def test_a_daemon_killed_mid_restore_takes_its_worker_down_says_why_and_the_next_restore_is_eager(
        restores, r, monkeypatch):
    restorer, m, started = restores
    real_restore = criu_mod.restore
    paused: list[int] = []

    async def restore_then_pause_the_daemon(*args, work_dir=None, **kw):
        # Paused the moment CRIU is done, the daemon has copied next to nothing of the heap:
        # killed below, after the answer, it dies mid-restore, not after the fact.
        result = await real_restore(*args, work_dir=work_dir, **kw)
        for pid in daemons(work_dir) if work_dir is not None else ():
            os.kill(pid, signal.SIGSTOP)
            paused.append(pid)
        return result

    monkeypatch.setattr(criu_mod, "restore", restore_then_pause_the_daemon)
    pod = await restoring(r, "pod-k1")
    answer = await restorer.restore(SnapshotRestore(pod=pod, fn=FN, snapshot=m.id, mode="lazy"))
    monkeypatch.setattr(criu_mod, "restore", real_restore)
    assert answer.ok and answer.how == "lazy" and paused, answer
    pid = int(answer.runtime_ref.split(":")[0])
    started.append(pid)
    for daemon in paused:
        os.kill(daemon, signal.SIGKILL)
    assert await gone(lambda: not pid_alive(pid)), "a worker whose pages cannot come back is stopped"
    # the worker can die of a missing page before the snapshotter, woken by its daemon's exit,
    # has written why: read it until it is there
    reason = await eventually(lambda: events.stop_reason(r, pod), 10, what=f"why {pod}'s worker was stopped")
    assert "lazy-pages daemon was killed by signal 9 before all pages were in" in reason
    work = restorer.s.work_dir
    assert await gone(lambda: not daemons(work) and not list(work.glob("lazy-*"))), "nothing is left"

    again = await restorer.restore(SnapshotRestore(pod=await restoring(r, "pod-k2"), fn=FN, snapshot=m.id,
                                                   mode="lazy"))
    assert again.ok and again.how == "eager (a lazy restore of this snapshot failed on this node)", again
    started.append(int(again.runtime_ref.split(":")[0]))
    assert (await asyncio.to_thread(get, m.port, "/all"))["intact"]


@pytest.mark.parametrize(
    ("mode", "memory_mib", "unavailable", "failed_before", "demand", "lazy", "how", "gpu"),
    [
        ("eager", 4096, "", False, None, False, "eager", False),
        ("lazy", 16, "", False, None, True, "lazy", False),
        ("auto", 512, "", False, None, True, "lazy (auto: 512 MiB of pages)", False),
        ("auto", 64, "", False, None, False, "eager (auto: 64 MiB of pages, under 128 MiB)", False),
        ("lazy", 512, "no uffd here", False, None, False, "eager (no uffd here)", False),
        ("auto", 512, "", True, None, False, "eager (a lazy restore of this snapshot failed on this node)", False),
        # a worker that touched little of its heap before the daemon copied it in stays lazy...
        ("auto", 512, "", False, 0.002, True, "lazy (auto: 512 MiB of pages)", False),
        # ...one that read all of it comes back eagerly; asked for lazy, it still gets lazy
        ("auto", 512, "", False, 0.3, False, "eager (auto: its last lazy restore faulted in 30% of the pages "
                                             "on demand)", False),
        ("lazy", 512, "", False, 0.3, True, "lazy", False),
        # the CUDA toggle reads a GPU snapshot's device copy in whole: auto brings it back eagerly
        ("auto", 4096, "", False, None, False, "eager (auto: a GPU snapshot, whose device memory is copied back "
                                               "in whole)", True),
    ],
)
def test_the_restore_mode_is_what_was_asked_unless_the_node_cannot_or_it_failed_before(
        mode, memory_mib, unavailable, failed_before, demand, lazy, how, gpu):
    assert restore_modes.choose(mode, memory_mib << 20, unavailable, failed_before, demand, gpu) == (lazy, how)


def test_a_sandboxed_worker_restores_lazily_only_where_the_host_allows_unprivileged_userfaultfd(tmp_path):
    sysctl = tmp_path / "unprivileged_userfaultfd"
    sysctl.write_text("0\n")
    assert "unprivileged_userfaultfd = 1" in lazy_pages.unavailable_reason(True, sysctl)
    assert lazy_pages.unavailable_reason(False, sysctl) == "", "a plain worker is root's: no setting needed"
    sysctl.write_text("1\n")
    assert lazy_pages.unavailable_reason(True, sysctl) == ""
