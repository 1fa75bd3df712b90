"""`thaw up` adopts every orphan of the tree it started, so that it can stop them all.

Workers leave their agent's session (they must outlive an agent crash to be adopted), CRIU
restores workers detached, and podman's conmon double-forks; none of them is in a component's
process group. As a child subreaper (prctl PR_SET_CHILD_SUBREAPER), `thaw up` becomes their
parent once whoever started them is gone, instead of init: it then reaps them when they exit,
and on shutdown kills whatever of its tree is still there.
"""

import ctypes
import os
import signal
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants. False where Linux says no."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children(pid: int | None = None) -> list[int]:
    """The direct children of `pid` (default: this process), zombies included."""
    pid = pid or os.getpid()
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return [p for p in _all_pids() if _parent_of(p) == pid]


def reap_orphans(ours: set[int]) -> list[int]:
    """Reap exited children that are not in `ours` (those a subprocess.Popen waits for);
    returns their pids. Never blocks."""
    reaped = []
    for pid in children():
        if pid in ours:
            continue
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done:
            reaped.append(pid)
    return reaped


def kill_all_children(ours: set[int], timeout_s: float) -> list[int]:
    """SIGKILL every child not in `ours` and its process group, reap it, and repeat for the
    grandchildren that are handed up to this process as their parents die, until none is
    left or `timeout_s` passes. Returns the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in children() if p not in ours]
        if not left:
            break
        for pid in left:
            _kill_group_and_process(pid)
            killed.append(pid)
        for pid in left:
            _reap(pid, deadline)
    return killed


def _kill_group_and_process(pid: int) -> None:
    for send in (os.killpg, os.kill):
        try:
            send(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rfind(")") + 2:].split()[1])
