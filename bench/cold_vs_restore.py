"""Cold start vs snapshot restore of the CPU reference worker, for both worker runtimes.

What is timed: from the moment the agent would act on a placement decision until the worker
answers its first /infer request (HTTP 200), median of N runs each, cold and restore
interleaved in one run so both see the same machine load.

- process, cold:     ``unshare --pid --fork setsid python worker.py`` -> import + map/check 1 GiB
- process, restore:  verify + unpack the archive from the local tier (fresh cache each run, the
                     worst case on a node) -> ``criu restore`` -> first answer
- container, cold:   ContainerRuntime.start (podman create + start) -> same worker in a container
- container, restore: what the snapshotter does on a node that restored this snapshot before:
                     rename a staged standby container (imported and stopped beforehand, see
                     snapshotter/standby.py) and restore it in place -> answer. Staging runs
                     between timed runs and is awaited, so it never overlaps a cold start.
- container, import: the snapshotter's path without a standby: verify + unpack from the local
                     tier (fresh cache each run) -> libpod restore with import -> answer
                     (reported as its own row, same cold starts)

The weights file is in the page cache for both (it is node-local and shared by every worker;
the first cold start after boot would be slower still). Needs root, CRIU and podman:
``sudo infra/install-criu.sh && sudo infra/install-podman.sh``.

Usage: python -m bench.cold_vs_restore [--runs 5] [--model-mib 1024] [--runtimes process,container]
"""

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from agents.runtime.base import WorkerHandle, WorkerLaunch
from agents.runtime.container import ContainerRuntime, ContainerSettings
from snapshotter import criu as criu_mod
from snapshotter.container_restores import ContainerRestores
from snapshotter.containers import CHECKPOINT_FILE
from snapshotter.manifest import HostFacts, Manifest
from snapshotter.materialize import materialize
from snapshotter.standby import StandbyPool
from snapshotter.store import Tier, TieredStore
from thaw_core import spawn
from thaw_core.podman.checkpoints import PodmanCheckpoints

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "examples" / "torchlike" / "worker.py"
CONTAINER_PORT = 8000
SOCKET = Path("/run/thaw/podman-bench.sock")


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_answer(port: int, timeout_s: float = 120.0) -> dict:
    body = json.dumps({"input": "first request"}).encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/infer", data=body)
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(f"no answer on port {port} within {timeout_s}s")


class Bench:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.env = {"PATH": os.environ["PATH"], "THAW_MODEL_DIR": str(args.model_dir),
                    "THAW_MODEL_MIB": str(args.model_mib), "THAW_IMPORT_FUNCS": str(args.import_funcs)}
        self.store = TieredStore([Tier("local", work / "local"), Tier("shared", work / "shared")])

    # -- process runtime ------------------------------------------------------------------
    def spawn_process(self, port: int) -> int:
        fd = os.open(self.work / "process-worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            unshare = subprocess.Popen(["unshare", "--pid", "--fork", "setsid", sys.executable, str(WORKER)],
                                       env={**self.env, "PORT": str(port)}, stdin=subprocess.DEVNULL,
                                       stdout=fd, stderr=subprocess.STDOUT)
        finally:
            os.close(fd)
        children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
        while not children.read_text().split():
            time.sleep(0.001)
        return int(children.read_text().split()[0])

    @staticmethod
    def kill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            time.sleep(0.005)

    async def process_cold(self) -> float:
        port = self.process_port
        t0 = time.monotonic()
        pid = self.spawn_process(port)
        await asyncio.to_thread(first_answer, port)
        dt = time.monotonic() - t0
        self.kill(pid)
        return dt

    async def process_snapshot(self, criu) -> Manifest:
        self.process_port = free_port()
        pid = self.spawn_process(self.process_port)
        await asyncio.to_thread(first_answer, self.process_port)
        d = await criu_mod.dump(criu, pid, self.work / "process-dump")
        say(f"process: dumped in {d.duration_s:.2f}s, {d.size_bytes / 2**20:.1f} MiB raw")
        self.kill(pid)
        return self.put(self.work / "process-dump", "process", criu, self.process_port)

    async def process_restore(self, criu, m: Manifest) -> float:
        cache = self.work / f"cache-{uuid.uuid4().hex[:6]}"
        t0 = time.monotonic()
        image = await materialize(self.store, HostFacts.local(criu.version), "process", m, cache)
        pid = (await criu_mod.restore(criu, image)).pid
        await asyncio.to_thread(first_answer, self.process_port)
        dt = time.monotonic() - t0
        self.kill(pid)
        shutil.rmtree(cache)
        return dt

    # -- container runtime ----------------------------------------------------------------
    def launch(self, port: int) -> WorkerLaunch:
        return WorkerLaunch(pod=f"bench-{uuid.uuid4().hex[:8]}", fn="torchlike", port=port,
                            image=self.args.image, container_port=CONTAINER_PORT,
                            env={**self.env, "THAW_MODEL_DIR": str(self.args.model_dir)})

    async def container_cold(self, rt: ContainerRuntime) -> float:
        port = free_port()
        t0 = time.monotonic()
        handle = await rt.start(self.launch(port))
        await asyncio.to_thread(first_answer, port)
        dt = time.monotonic() - t0
        await rt.stop(handle, grace_s=0)
        return dt

    async def container_snapshot(self, rt: ContainerRuntime, criu) -> Manifest:
        port = free_port()
        handle = await rt.start(self.launch(port))
        await asyncio.to_thread(first_answer, port)
        ckpt = await PodmanCheckpoints(rt.podman).checkpoint(handle.ref, self.work / "container-dump" / CHECKPOINT_FILE)
        say(f"container: checkpointed in {ckpt.duration_s:.2f}s, {ckpt.size_bytes / 2**20:.1f} MiB")
        await rt.stop(handle, grace_s=0)
        return self.put(self.work / "container-dump", "container", criu, CONTAINER_PORT)

    def restorer(self, rt: ContainerRuntime, criu, cache: Path) -> ContainerRestores:
        podman = PodmanCheckpoints(rt.podman)  # the runtime's client: one podman client per process
        return ContainerRestores(podman, self.store, HostFacts.local(criu.version), cache,
                                 StandbyPool(podman, 1), asyncio.Lock(), refill_delay_s=3600)

    async def container_restore(self, rt: ContainerRuntime, criu, m: Manifest) -> float:
        """The snapshotter's restore with a standby staged beforehand (untimed, awaited)."""
        restores = self.restorer(rt, criu, self.work / "cache-standby")
        if await restores.prepare(m) != 1:
            raise RuntimeError("could not stage a standby container")
        return await _timed_restore(rt, restores, m, expect="standby")

    async def container_import(self, rt: ContainerRuntime, criu, m: Manifest) -> float:
        """The snapshotter's restore with no standby and a cold cache: fetch, verify, import."""
        cache = self.work / f"cache-{uuid.uuid4().hex[:6]}"
        restores = self.restorer(rt, criu, cache)
        restores.standby.per_snapshot = 0
        dt = await _timed_restore(rt, restores, m, expect="import")
        shutil.rmtree(cache)
        return dt

    # -- shared ---------------------------------------------------------------------------
    def put(self, image_dir: Path, runtime: str, criu, port: int) -> Manifest:
        sid = f"torchlike-{runtime}-{uuid.uuid4().hex[:6]}"
        draft = Manifest(id=sid, fn="torchlike", node=platform.node(), runtime=runtime,
                         created_ms=int(time.time() * 1000), sha256="", size_bytes=0, raw_bytes=0,
                         arch=platform.machine(), kernel=platform.release(),
                         criu_version=criu.version, port=port)
        m, tiers = self.store.put(image_dir, draft, progress=lambda s: say(f"{runtime}: {s}"))
        return m


async def measure(label: str, cold, restore, runs: int, extra=None) -> dict:
    """Interleaved cold / restore (/ extra) runs, so all see the same machine load."""
    colds, restores, extras = [], [], []
    for i in range(runs):
        colds.append(await cold())
        restores.append(await restore())
        if extra is not None:
            extras.append(await extra())
        say(f"{label} run {i + 1}/{runs}: cold {colds[-1]:.3f}s, restore {restores[-1]:.3f}s"
            + (f", restore by import {extras[-1]:.3f}s" if extras else ""))
    out = {"cold": statistics.median(colds), "restore": statistics.median(restores),
           "colds": colds, "restores": restores}
    if extras:
        out["extra"] = {"restore": statistics.median(extras), "restores": extras}
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model-mib", type=int, default=1024)
    ap.add_argument("--import-funcs", type=int, default=9000)
    ap.add_argument("--model-dir", type=Path, default=Path("/var/cache/thaw-bench/models"))
    ap.add_argument("--runtimes", default="process,container")
    ap.add_argument("--image", default="")
    args = ap.parse_args()
    if args.runs < 5:
        ap.error("--runs must be at least 5 (the issue asks for a median of >= 5)")
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if os.geteuid() != 0:
        sys.exit("run as root: CRIU and rootful podman need it")

    criu = await criu_mod.find_criu()
    sys.path.insert(0, str(WORKER.parent))
    import worker as torchlike  # noqa: E402 -- create the weights once, outside any timing
    say(f"weights: {torchlike.ensure_weights(args.model_dir, args.model_mib)}")

    results: dict[str, dict] = {}
    image_bytes = 0
    with tempfile.TemporaryDirectory(prefix="thaw-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        if "process" in runtimes:
            m = await bench.process_snapshot(criu)
            r = await measure("process", bench.process_cold, lambda: bench.process_restore(criu, m), args.runs)
            results["process"] = {**r, "size": m.size_bytes, "raw": m.raw_bytes}
        if "container" in runtimes:
            if not args.image:
                args.image = subprocess.run([str(REPO / "infra" / "build-worker-image.sh")], check=True,
                                            capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rt = ContainerRuntime(ContainerSettings(socket=SOCKET, node=platform.node(),
                                                    mounts=(args.model_dir,)))
            try:
                m = await bench.container_snapshot(rt, criu)
                r = await measure("container", lambda: bench.container_cold(rt),
                                  lambda: bench.container_restore(rt, criu, m), args.runs,
                                  extra=lambda: bench.container_import(rt, criu, m))
                extra = r.pop("extra")
                results["container"] = {**r, "size": m.size_bytes, "raw": m.raw_bytes}
                results["container (import, no standby)"] = {
                    **r, **extra, "size": m.size_bytes, "raw": m.raw_bytes}
                image_bytes = await podman_image_bytes(args.image)
            finally:
                await rt.close()

    print(f"\nCold start vs restore — torchlike worker, {args.model_mib} MiB weights (mmapped), "
          f"{args.import_funcs} import-time functions, median of {args.runs}, "
          f"{os.cpu_count()} cores, kernel {platform.release()}, CRIU {criu.version}")
    print(f"{'runtime':<32} {'cold (s)':>9} {'restore (s)':>12} {'ratio':>7} {'snapshot zstd':>14} {'raw':>10}")
    for name, r in results.items():
        print(f"{name:<32} {r['cold']:>9.3f} {r['restore']:>12.3f} {r['cold'] / r['restore']:>6.1f}x "
              f"{r['size'] / 2**20:>10.1f} MiB {r['raw'] / 2**20:>6.1f} MiB")
    if image_bytes:
        print(f"container image {args.image}: {image_bytes / 2**20:.1f} MiB (not in the snapshot; "
              f"weights are bind-mounted from the node)")
    print(json.dumps({k: {kk: vv for kk, vv in v.items()} for k, v in results.items()}))


async def podman_image_bytes(image: str) -> int:
    done = await spawn.run(["podman", "image", "inspect", image, "--format", "{{.Size}}"])
    return int(done.output.strip() or 0) if done.returncode == 0 else 0


async def _timed_restore(rt: ContainerRuntime, restores, m: Manifest, expect: str) -> float:
    """Seconds from the restore call to the restored worker's first answer; the restore must
    have gone the `expect` way ("standby" or "import"). The container is removed after."""
    pod = f"bench-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    restored, how = await restores.restore(pod, m)
    await asyncio.to_thread(first_answer, restored.host_port)
    dt = time.monotonic() - t0
    await restores.close()
    assert how == expect, how
    await rt.stop(WorkerHandle(pod, "container", restored.id, restored.endpoint), grace_s=0)
    return dt


if __name__ == "__main__":
    asyncio.run(main())
