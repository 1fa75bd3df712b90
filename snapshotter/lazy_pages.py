"""CRIU's lazy-pages daemon, one per lazy restore: the worker runs before its memory is back.

`criu restore --lazy-pages` restores everything but the image's anonymous pages and hands the
worker's memory to a `criu lazy-pages` daemon through userfaultfd. The daemon answers each page
fault from the image and, between faults, copies the remaining pages in on its own; once every
page is in it exits 0. A worker that touches little of its memory per request answers before
most of it is back (bench/restore_sizes.py).

Why each restore gets its own daemon and work dir (not the image dir): concurrent restores of
one image share that directory, and the daemon's socket, logs and pid file are per restore.

A daemon that dies before its exit 0 leaves the worker's missing pages unreachable (in this VM
the worker hung on its next fault), so `Restores` kills such a worker and says why.

Where the worker runs in a user namespace of its own (the sandbox), the restored task itself
opens the userfaultfd without CAP_SYS_PTRACE in the host's namespace, which the kernel allows
only with `vm.unprivileged_userfaultfd = 1`. That setting lets any process on the host handle
its own page faults, which kernel exploits use to win races, so Thaw never sets it: an
operator who wants lazy restores of sandboxed workers sets it (README, "Lazy restores").
"""

import asyncio
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from thaw_core import spawn

from snapshotter.criu import Criu, tail_errors
from snapshotter.errors import RestoreFailed

UNPRIVILEGED_UFFD = Path("/proc/sys/vm/unprivileged_userfaultfd")
SOCKET = "lazy-pages.socket"
LOG = "lazy-pages.log"
READY_TIMEOUT_S = 5.0


def unavailable_reason(sandboxed: bool, sysctl: Path = UNPRIVILEGED_UFFD) -> str:
    """Why a lazy restore cannot run here, or "" when it can."""
    if not sandboxed:
        return ""  # the restored task is root in the host's namespaces
    try:
        allowed = sysctl.read_text().strip() == "1"
    except OSError:
        allowed = False
    return "" if allowed else (f"lazy restore of a sandboxed worker needs {sysctl} = 1 on this node "
                               "(see the README: Lazy restores); restored eagerly")


@dataclass
class LazyPages:
    """A running daemon serving one restore's pages from `image_dir`."""

    child: spawn.Child
    work_dir: Path
    image_dir: Path
    memory: int = 0  # bytes of memory pages in the image (restore_modes.memory_bytes)

    def restore_options(self) -> tuple[str, ...]:
        return ("--lazy-pages",)

    async def wait(self) -> int:
        """Its exit code: 0 once every page is in (or the worker is gone), else a failure."""
        return await self.child.wait()

    def failure(self, code: int) -> str:
        """Why it stopped early, for the pod's events and state."""
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        tail = _log_tail(self.work_dir / LOG)
        return f"the lazy-pages daemon {how} before all pages were in" + (f": {tail}" if tail else "")

    def stop(self) -> None:
        """Kill the daemon (if it runs) and remove its work dir; safe to repeat."""
        self.child.kill()
        self.child.poll()
        shutil.rmtree(self.work_dir, ignore_errors=True)


async def start(criu: Criu, image_dir: Path, scratch: Path) -> LazyPages:
    """Start a daemon for `image_dir` with a fresh work dir under `scratch`, and wait until its
    socket is there (a restore started before that finds no daemon). Raises RestoreFailed."""
    work = scratch / f"lazy-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True, mode=0o700)
    argv = [str(criu.path), "lazy-pages", "-D", str(image_dir), "-W", str(work), "-o", LOG]
    try:
        child = spawn.start(argv, new_session=True)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise RestoreFailed("criu lazy-pages", f"could not start: {exc}") from None
    daemon = LazyPages(child=child, work_dir=work, image_dir=image_dir)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (work / SOCKET).exists():
        code = child.poll()
        if code is not None or time.monotonic() > deadline:
            why = f"exited with code {code}" if code is not None else f"no socket within {READY_TIMEOUT_S:g}s"
            tail = _log_tail(work / LOG)
            daemon.stop()
            raise RestoreFailed("criu lazy-pages", why, log_tail=tail)
        await asyncio.sleep(0.005)
    return daemon


def _log_tail(log: Path) -> str:
    """The daemon log's last error lines, on one line (it goes into a pod's reason)."""
    return tail_errors(log, lines=3).replace("\n", " | ")


def sweep(scratch: Path, older_than_s: float = 600.0) -> int:
    """Remove work dirs of daemons a previous snapshotter left (a daemon is done within seconds
    of its restore; its watcher, which removes the dir, died with that snapshotter)."""
    removed = 0
    cutoff = time.time() - older_than_s
    for entry in scratch.glob("lazy-*"):
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry)
                removed += 1
        except OSError:
            continue
    return removed
