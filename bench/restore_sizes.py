"""Eager vs lazy restore by image size: time to first answer, in one run.

For each heap size (examples/heap: anonymous memory, 64 MiB to 2 GiB resident) a worker is
cold-started, serves one call and is snapshotted through the snapshotter's own capture; then,
interleaved so both modes see the same machine load, it is restored again and again through
the snapshotter's own `Restores` (eager, then lazy, `--runs` times each), and timed from the
restore request to the first answer of:

- `little`: a request that reads 256 pages spread over the heap;
- `all`: a request that reads every page (and checks the heap came back intact).

Printed per size and request: median first answer eager and lazy, lazy / eager as a ratio,
what `restore = "auto"` picks (snapshotter/restore_modes.py) and whether that is the faster.

The workers are plain namespace inits run by root, not sandboxed ones: a sandboxed restore adds
the same mount-namespace wrapper and veth to both modes, and lazily restoring a sandboxed worker
needs `vm.unprivileged_userfaultfd = 1` (snapshotter/lazy_pages.py), which this bench does not
set. Needs root and CRIU (`infra/install-criu.sh`); run with nothing else busy.

Usage: sudo nice .venv/bin/python -m bench.restore_sizes [--sizes 64,256,1024,2048] [--runs 3]
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from redis.asyncio import Redis

from bus_schemas import redis_keys as K
from bus_schemas.snapshots import SnapshotRestore
from snapshotter import procs, restore_modes
from snapshotter.capture import capture_process
from snapshotter.criu import find_criu
from snapshotter.restores import Restores
from snapshotter.retention import RetentionPolicy
from snapshotter.settings import SnapshotterSettings
from thaw_core import process_refs
from thaw_core.ports import free_port
from thaw_core.servers import start_redis
from thaw_core.store.snapshots import SnapshotIndex

HEAP_WORKER = Path(__file__).resolve().parents[1] / "examples" / "heap" / "worker.py"
NODE, FN = "bench-restore-sizes", "heap"
KINDS = ("little", "all")
MODES = ("eager", "lazy")
TIE = 0.10


def say(msg: str) -> None:
    print(f"[restore-sizes] {msg}", flush=True)


def get(port: int, path: str, timeout_s: float = 30.0) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
        return json.loads(r.read())


def first_answer(port: int, path: str, deadline_s: float = 60.0) -> dict:
    end = time.monotonic() + deadline_s
    while True:
        try:
            return get(port, path)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.002)


def wait_port_free(port: int, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while procs.port_in_use(port) and time.monotonic() < end:
        time.sleep(0.01)


def kill_and_wait(pid: int) -> None:
    procs.kill(pid)
    end = time.monotonic() + 10
    while process_refs.start_time(pid) is not None and time.monotonic() < end:
        time.sleep(0.01)


async def snapshot_of(size_mib: int, settings: SnapshotterSettings, criu, r: Redis, root: Path):
    """Cold-start a heap worker of `size_mib`, serve one call, snapshot it, stop it."""
    port = free_port()
    log_fd = os.open(root / f"worker-{size_mib}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port), "HEAP_MIB": str(size_mib)}
    try:
        unshare = subprocess.Popen(["unshare", "--pid", "--fork", "setsid", sys.executable, str(HEAP_WORKER)],
                                   env=env, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT)
    finally:
        os.close(log_fd)
    pid = 0
    try:
        await asyncio.to_thread(first_answer, port, "/health", 120)
        pid = int(Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split()[0])
        await asyncio.to_thread(get, port, "/little")
        m, tiers = await capture_process(criu, settings.store(), SnapshotIndex(r), fn=FN, node=NODE, pid=pid,
                                         port=port, work_dir=settings.work_dir, policy=RetentionPolicy(keep_count=8))
    finally:
        if pid:
            kill_and_wait(pid)
        unshare.kill()
        unshare.wait(5)
    await SnapshotIndex(r).add(m, tiers)
    return m


async def timed_restore(restores: Restores, r: Redis, m, mode: str, kind: str, n: int) -> tuple[float, float, str]:
    """(first answer s, snapshotter's restore s, how) of one restore of `m` in `mode`."""
    pod = f"bench-{m.id[-6:]}-{mode}-{kind}-{n}"
    await r.hset(K.pod(pod), mapping={"fn": FN, "node": NODE, "state": "restoring"})
    await asyncio.to_thread(wait_port_free, m.port)
    t0 = time.perf_counter()
    answer = await restores.restore(SnapshotRestore(pod=pod, fn=FN, snapshot=m.id, mode=mode))
    if not answer.ok:
        raise RuntimeError(f"restore failed: {answer.error}")
    body = await asyncio.to_thread(first_answer, m.port, f"/{kind}")
    took = time.perf_counter() - t0
    pid = int(answer.runtime_ref.split(":")[0])
    if kind == "all" and not body.get("intact"):
        raise RuntimeError(f"{mode} restore of {m.id} came back with a damaged heap: {body}")
    await restores.settled()  # a lazy daemon copies the rest in; auto learns from how it went
    kill_and_wait(pid)
    await r.delete(K.pod(pod))
    return took, answer.restore_s, answer.how


async def run(args) -> int:
    if os.geteuid() != 0:
        print("bench.restore_sizes needs root (CRIU)", file=sys.stderr)
        return 2
    criu = await find_criu()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="thaw-restore-sizes-") as tmp:
        root = Path(tmp)
        server = start_redis(root / "redis")
        r = Redis.from_url(server.url, decode_responses=True)
        settings = SnapshotterSettings(node=NODE, nats_url="", redis_url=server.url, state_dir=root / "state")
        restores = Restores(settings, criu, r, asyncio.Lock())
        try:
            for size in sizes:
                say(f"{size} MiB: cold start and snapshot")
                m = await snapshot_of(size, settings, criu, r, root)
                image = settings.cache_dir / m.id
                await timed_restore(restores, r, m, "eager", "little", -1)  # unpacks the image, untimed
                for kind in KINDS:
                    times: dict[str, list[float]] = {mode: [] for mode in MODES}
                    for n in range(args.runs):
                        for mode in MODES:
                            took, restore_s, how = await timed_restore(restores, r, m, mode, kind, n)
                            if not how.startswith(mode):
                                raise RuntimeError(f"asked for {mode}, got {how}")
                            times[mode].append(took)
                            say(f"{size} MiB {kind:6} {mode:5} run {n + 1}: first answer {took:.3f}s "
                                f"(restore {restore_s:.3f}s)")
                    memory = restore_modes.memory_bytes(image) if image.is_dir() else size << 20
                    rows.append((size, kind, memory, restores.demand(m.id), statistics.median(times["eager"]),
                                 statistics.median(times["lazy"])))
        finally:
            await restores.close()
            await r.aclose()
            server.stop()
    print_table(rows, args.runs)
    return 0


def print_table(rows, runs: int) -> None:
    print(f"\nFirst answer after a restore request, median of {runs} (seconds); lazy/eager < 1: lazy faster;"
          "\non demand: share of the pages the worker faulted in itself in its last lazy restore, from which"
          "\nauto learns (its first restore of a snapshot is lazy above the size threshold)")
    head = f"{'heap MiB':>8} {'request':<7} {'pages MiB':>9} {'on demand':>9} {'eager':>7} {'lazy':>7} " \
           f"{'lazy/eager':>10} {'auto picks':>10} {'right':>5}"
    print(head)
    print("-" * len(head))
    for size, kind, memory, demand, eager, lazy in rows:
        lazy_pick, _ = restore_modes.choose("auto", memory, "", False, demand)
        pick = "lazy" if lazy_pick else "eager"
        faster = "lazy" if lazy < eager else "eager"
        # within 10% of each other the two are a tie: eager restores of one image vary that much
        # from run to run on these machines
        tie = abs(lazy - eager) <= TIE * min(lazy, eager)
        right = "tie" if tie else "yes" if pick == faster else "NO"
        shown = f"{demand:.1%}" if demand is not None else "-"
        print(f"{size:8d} {kind:<7} {memory >> 20:9d} {shown:>9} {eager:7.3f} {lazy:7.3f} {lazy / eager:10.2f} "
              f"{pick:>10} {right:>5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,256,1024,2048", help="heap sizes in MiB, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="restores per size, request and mode")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
