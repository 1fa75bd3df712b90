"""A pod's cgroup: memory, CPU and pids limits, on cgroup v2 where the host has it, v1 where not.

The agent creates a pod's cgroup with its function's limits before the worker exists (cold
start or restore) and removes it after the worker is gone; the worker's launcher, or the CRIU
restoring it, joins it first, so every process of the pod is counted from its first page.
Paths are `thaw/<node>/<pod>` under each hierarchy, so two platforms on one host never share one.
"""

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "pids")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mib: int
    cpu_milli: int
    pids: int


def version(root: Path = ROOT) -> int:
    """2 when the unified hierarchy has the memory, cpu and pids controllers, else 1; 0 when
    neither is usable (no limits can be set here)."""
    controllers = root / "cgroup.controllers"
    if controllers.exists() and {"memory", "cpu", "pids"} <= set(controllers.read_text().split()):
        return 2
    if all(os.access(root / c, os.W_OK) for c in V1_CONTROLLERS):
        return 1
    return 0


def pod_dirs(node: str, pod: str, root: Path = ROOT) -> tuple[Path, ...]:
    """The pod's cgroup directories: one on v2, one per controller on v1."""
    rel = Path("thaw") / node / pod
    if version(root) == 2:
        return (root / rel,)
    return tuple(root / c / rel for c in V1_CONTROLLERS)


def create(node: str, pod: str, limits: Limits, root: Path = ROOT) -> tuple[Path, ...]:
    """Make the pod's cgroup with `limits` (idempotent) and return its directories."""
    v = version(root)
    if v == 2:
        _enable_controllers(root, Path("thaw") / node)
    dirs = pod_dirs(node, pod, root)
    files = _v2_files(dirs[0], limits) if v == 2 else _v1_files(limits)
    for d, d_files in zip(dirs, files):
        d.mkdir(parents=True, exist_ok=True)
        for name, value in d_files:
            (d / name).write_text(value)
    return dirs


def _quota_us(limits: Limits) -> str:
    return str(max(1000, limits.cpu_milli * CPU_PERIOD_US // 1000))


def _v2_files(d: Path, limits: Limits) -> list[list[tuple[str, str]]]:
    files = [("memory.max", str(limits.memory_mib << 20)), ("cpu.max", f"{_quota_us(limits)} {CPU_PERIOD_US}"),
             ("pids.max", str(limits.pids))]
    if (d.parent / "memory.swap.max").exists() or (d / "memory.swap.max").exists():
        files.append(("memory.swap.max", "0"))  # a memory limit a worker cannot page past
    return [files]


def _v1_files(limits: Limits) -> list[list[tuple[str, str]]]:
    """In the order of V1_CONTROLLERS, like pod_dirs."""
    return [[("memory.limit_in_bytes", str(limits.memory_mib << 20))],
            [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", _quota_us(limits))],
            [("pids.max", str(limits.pids))]]


def _enable_controllers(root: Path, rel: Path) -> None:
    """v2 hands a controller to children only when every ancestor enables it in its subtree."""
    current = root
    for part in rel.parts:
        subtree = current / "cgroup.subtree_control"
        enabled = set(subtree.read_text().split())
        missing = [c for c in V1_CONTROLLERS if c not in enabled]
        if missing:
            subtree.write_text(" ".join(f"+{c}" for c in missing))
        current = current / part
        current.mkdir(exist_ok=True)
    subtree = current / "cgroup.subtree_control"
    if {"memory", "cpu", "pids"} - set(subtree.read_text().split()):
        subtree.write_text("+memory +cpu +pids")


def join_script(dirs: tuple[Path, ...]) -> str:
    """Shell lines that move the running shell (and so everything it execs or forks) into the
    pod's cgroup: `0` names the writer itself."""
    return "".join(f"echo 0 > '{d}/cgroup.procs' || exit 125\n" for d in dirs)


def oom_kills(dirs: tuple[Path, ...]) -> int:
    """How many times the kernel's OOM killer killed a process of this cgroup (0 if unknown)."""
    for d in dirs:
        for name in ("memory.events", "memory.oom_control"):
            try:
                lines = (d / name).read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return 0


def members(dirs: tuple[Path, ...]) -> frozenset[int]:
    """The pids in the pod's cgroup (as this process's PID namespace numbers them)."""
    for d in dirs:
        try:
            return frozenset(int(p) for p in (d / "cgroup.procs").read_text().split())
        except OSError:
            continue
    return frozenset()


def node_members(node: str, root: Path = ROOT) -> frozenset[int]:
    """The pids in any pod cgroup of `node`: its workers, restored ones included."""
    base = root / "thaw" / node if version(root) == 2 else root / V1_CONTROLLERS[0] / "thaw" / node
    try:
        pods = [d for d in base.iterdir() if d.is_dir()]
    except OSError:
        return frozenset()
    return frozenset().union(*(members((d,)) for d in pods))


def remove_node(node: str, root: Path = ROOT) -> bool:
    """Remove `node`'s cgroup directory and the pod cgroups in it that hold no process (a pod
    with a live worker keeps its own, and so the node's); True when gone. Left behind,
    thousands of them (a test run makes one per node) slowed the host's memory accounting until
    restores of a 512 MiB image took 10 s instead of 2."""
    bases = [root / "thaw" / node] if version(root) == 2 else [root / c / "thaw" / node for c in V1_CONTROLLERS]
    for base in bases:
        try:
            for pod in [d for d in base.iterdir() if d.is_dir()]:
                with contextlib.suppress(OSError):
                    pod.rmdir()
            base.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return True


def in_node(pid: int, node: str) -> bool:
    """Whether process `pid` is in one of `node`'s pod cgroups."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    return any(f"/thaw/{node}/" in line for line in lines)


def remove(dirs: tuple[Path, ...]) -> bool:
    """Remove the pod's cgroup; False while it still has members (the caller retries)."""
    done = True
    for d in dirs:
        try:
            d.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            done = False
    return done
