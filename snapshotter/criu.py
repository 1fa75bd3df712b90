"""CRIU for local-process workers: dump a running worker, restore it detached.

Contract a worker must meet to be dumped and restored (the process runtime provides it):

- It is the init of its own PID namespace, started as ``unshare --pid --fork setsid CMD``
  and dumped by the pid of unshare's child. CRIU restores a task with the pid it had, so a
  worker in the node's PID namespace could be restored only once, and never while the original
  (left running after the dump) lives; a namespace init is restored into a fresh PID namespace
  every time, so any number of copies can run side by side.
  Do not use ``unshare --kill-child``: the parent-death signal is part of the dumped state and
  kills the restored worker the moment CRIU exits.
- It leads its own session (``setsid`` inside the namespace; a session leader outside the
  namespace cannot be dumped), stdin is /dev/null, and stdout/stderr go to a file opened
  ``O_APPEND``: the original keeps writing after the dump, and CRIU refuses to restore a
  non-append file whose size changed.
- It handles SIGTERM itself (PID 1 of a namespace ignores default-action signals).
- Its bulk memory is file-backed (see examples/torchlike/worker.py): CRIU copies anonymous
  memory into the image and back, clean file pages it only re-maps.

Listening sockets are restored on their original address: copies of one image in the node's
network namespace share the port (the kernel spreads connections between them). Distinct
endpoints per copy need a network namespace per copy, which is what the container runtime gives.
"""

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from thaw_core import spawn

from snapshotter.errors import CriuFailed, CriuMissing, RestoreFailed

DEFAULT_SEARCH = ("/usr/local/sbin/criu", "/usr/local/bin/criu", "/usr/sbin/criu")
MIN_MAJOR = 4


@dataclass(frozen=True, slots=True)
class Criu:
    """A CRIU binary known to be usable on this node."""

    path: Path
    version: str  # e.g. "4.2.1"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


@dataclass(frozen=True, slots=True)
class DumpResult:
    image_dir: Path
    duration_s: float
    size_bytes: int


@dataclass(frozen=True, slots=True)
class RestoreResult:
    pid: int  # host pid of the restored root task
    duration_s: float


async def _run(*argv: str) -> tuple[int, str]:
    done = await spawn.run(argv)
    return done.returncode, done.output


async def find_criu(explicit: str | None = None, *, check: bool = True) -> Criu:
    """Return a CRIU of at least version 4 that passes `criu check` (when `check`).

    Looks at `explicit`, then /usr/local/sbin (where infra/install-criu.sh puts it), then PATH.
    Raises CriuMissing saying how to install one.
    """
    candidates = [explicit] if explicit else [*DEFAULT_SEARCH, shutil.which("criu")]
    found = [Path(c) for c in candidates if c and os.access(c, os.X_OK)]
    if not found:
        raise CriuMissing("find criu", f"no criu binary in {', '.join(c for c in candidates if c)}")
    path = found[0]
    code, out = await _run(str(path), "--version")
    version = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                    if ln.startswith("Version:")), "")
    if code or not version:
        raise CriuMissing("find criu", f"{path} --version failed: {out.strip()[:200]}")
    criu = Criu(path=path, version=version)
    if criu.major < MIN_MAJOR:
        raise CriuMissing("find criu", f"{path} is CRIU {version}; this kernel needs {MIN_MAJOR}.x")
    if check:
        code, out = await _run(str(path), "check")
        if code:
            raise CriuMissing("find criu", f"`{path} check` fails here: {out.strip()[-300:]}")
    return criu


def tail_errors(log: Path, lines: int = 12) -> str:
    """A CRIU log's last error lines (its last lines if none is an error), "" if unreadable."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln for ln in text if "Error" in ln]
    return "\n".join((errors or text)[-lines:])


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def dump(criu: Criu, pid: int, image_dir: Path, *, leave_running: bool = True,
               tcp_established: bool = True, shell_job: bool = False, extra: tuple[str, ...] = ()) -> DumpResult:
    """Checkpoint the process tree rooted at `pid` into `image_dir` (created, must be empty).

    `leave_running` keeps the worker serving; `tcp_established` lets a dump succeed while a
    client holds a keep-alive connection (restore then closes it, see `restore`).
    Raises CriuFailed with the log's error lines.
    """
    image_dir.mkdir(parents=True, exist_ok=True)
    if any(image_dir.iterdir()):
        raise CriuFailed("criu dump", f"image dir {image_dir} is not empty")
    log = f"dump-{uuid.uuid4().hex[:8]}.log"
    argv = [str(criu.path), "dump", "-t", str(pid), "-D", str(image_dir), "-o", log]
    argv += ["--leave-running"] if leave_running else []
    argv += ["--tcp-established"] if tcp_established else []
    # A connection still in the listen queue (a health probe mid-handshake) is not the image's:
    # its client retries, and the worker left running still has it.
    argv += ["--skip-in-flight"]
    argv += ["--shell-job"] if shell_job else []
    argv += extra
    t0 = time.monotonic()
    code, out = await _run(*argv)
    if code:
        raise CriuFailed("criu dump", f"could not checkpoint pid {pid}", exit_code=code,
                         log_path=str(image_dir / log), log_tail=tail_errors(image_dir / log) or out)
    return DumpResult(image_dir=image_dir, duration_s=time.monotonic() - t0,
                      size_bytes=_dir_size(image_dir))


async def restore(criu: Criu, image_dir: Path, *, tcp_close: bool = True,
                  shell_job: bool = False, extra: tuple[str, ...] = (),
                  wrapper: tuple[str, ...] = (), work_dir: Path | None = None) -> RestoreResult:
    """Restore the image in `image_dir` as a detached process tree and return its root's pid.

    The same image may be restored many times (each restore writes only its own log and pid
    file). `tcp_close` restores connections that were open at dump time as closed: their client
    is gone, and the original may still hold the same 4-tuple. `wrapper`: a command that
    prepares CRIU's surroundings and execs it (the sandbox's: snapshotter/sandboxed.py). Raises
    RestoreFailed (a SnapshotUnusable): the caller falls back to a cold start. `work_dir`:
    where CRIU writes its log and sockets (default: the image dir; a lazy restore's daemon
    waits on a socket in its own, snapshotter/lazy_pages.py).
    """
    op = uuid.uuid4().hex[:8]
    work = work_dir or image_dir
    log, pidfile = f"restore-{op}.log", work / f"restore-{op}.pid"
    argv = [str(criu.path), "restore", "-D", str(image_dir), "-o", log,
            "--restore-detached", "--pidfile", str(pidfile)]
    argv += ["-W", str(work_dir)] if work_dir else []
    argv += ["--tcp-close"] if tcp_close else ["--tcp-established"]
    argv += ["--shell-job"] if shell_job else []
    argv = [*wrapper, *argv, *extra]
    t0 = time.monotonic()
    code, out = await _run(*argv)
    if code:
        raise RestoreFailed("criu restore", f"could not restore {image_dir}", exit_code=code,
                         log_path=str(work / log), log_tail=tail_errors(work / log) or out)
    try:
        pid = int(pidfile.read_text().strip())
    finally:
        pidfile.unlink(missing_ok=True)
    (work / log).unlink(missing_ok=True)  # kept only when it explains a failure
    return RestoreResult(pid=pid, duration_s=time.monotonic() - t0)
