"""Start external programs (criu, podman, cuda-checkpoint, unshare, workers) from an event loop
with no Python code run between fork and exec.

Why not `asyncio.create_subprocess_exec`: under uvloop it forks through libuv and runs Python's
at-fork handlers in the child (`PyOS_AfterFork_Child`). In a threaded process those handlers can
deadlock before exec: OpenTelemetry's `after_in_child` hook allocates, the allocation runs the
garbage collector, and freeing a multithreaded zstd compressor there waits forever on worker
threads the child does not have. The parent's event loop then waits for an exec that never
comes, for good (issue 17: the snapshotter froze after a function's second restore).

`subprocess.Popen` without `preexec_fn` forks (or vforks) in C, does `setsid`, fd plumbing and
exec there, and runs no Python in the child. This module wraps it for asyncio: the exit is
awaited on a pidfd (readable once the process exits), so no thread is held per child and no
SIGCHLD handler is needed. Output is collected in an unnamed temporary file rather than a pipe,
so a grandchild that keeps a pipe open cannot hold up the caller.
"""

import asyncio
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
POLL_S = 0.02  # only where the kernel has no pidfd_open (Linux < 5.3)


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished run: its exit code (negative: killed by that signal) and its output
    (stdout and stderr interleaved, decoded leniently)."""

    returncode: int
    output: str


class Child:
    """A started program. `pid` is its host pid; `poll()` and `wait()` reap it exactly once."""

    def __init__(self, popen: subprocess.Popen[bytes], new_session: bool) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._new_session = new_session
        self._exited: asyncio.Future[None] | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # no pidfd on this kernel: wait() polls instead
            self._pidfd = None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        """The exit code if it has exited (reaping it), else None. Never blocks."""
        return self.popen.poll()

    async def wait(self) -> int:
        """Wait for the exit without blocking the loop; safe to call from many tasks at once,
        and cancelling a caller does not stop the child from being reaped when it exits."""
        if self.poll() is not None:
            self._close_pidfd()
            return self.popen.returncode
        if self._pidfd is None:
            while self.poll() is None:
                await asyncio.sleep(POLL_S)
            return self.popen.returncode
        if self._exited is None:
            self._exited = self._watch_exit(self._pidfd)
        await asyncio.shield(self._exited)
        return self.popen.wait()

    def _watch_exit(self, fd: int) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            self.popen.poll()  # reaped here, whether or not a caller still waits
            self._close_pidfd()
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, on_exit)
        return exited

    def send_signal(self, sig: int) -> None:
        """Signal the process (its whole group when it leads one); a gone process is fine."""
        if self.popen.returncode is not None:
            return
        try:
            if self._new_session:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is None:
            return
        if self._exited is not None:
            self._exited.get_loop().remove_reader(fd)
        os.close(fd)

    def __del__(self) -> None:
        # Only reached once no reader holds this child (on_exit refers to it until the exit).
        if self._pidfd is not None:
            os.close(self._pidfd)


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: int | IO[Any] | None = DEVNULL,
          stdout: int | IO[Any] | None = DEVNULL, stderr: int | IO[Any] | None = DEVNULL,
          new_session: bool = False, cwd: str | os.PathLike[str] | None = None) -> Child:
    """Start `argv` (no shell). `new_session`: the child leads a new session and process group
    (`setsid` done in C), and `kill()` signals that group. Raises OSError when it cannot start
    (e.g. FileNotFoundError for a missing program)."""
    popen = subprocess.Popen(list(argv), env=None if env is None else dict(env), stdin=stdin, stdout=stdout,
                             stderr=stderr, start_new_session=new_session, cwd=cwd, close_fds=True)
    return Child(popen, new_session)


async def run(argv: Sequence[str], *, timeout_s: float | None = None, env: Mapping[str, str] | None = None,
              new_session: bool = False) -> Completed:
    """Run `argv` to completion and return its exit code and output.

    With `timeout_s`, a run past it is killed (its group, with `new_session`), reaped, and
    TimeoutError raised. Cancelling the caller leaves the program running to its end (a CRIU
    dump stopped half-way could leave the worker frozen); it is reaped when it exits. Raises
    OSError when the program cannot start."""
    with tempfile.TemporaryFile() as out:
        child = start(argv, env=env, stdout=out, stderr=STDOUT, new_session=new_session)
        try:
            code = await asyncio.wait_for(child.wait(), timeout_s)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise TimeoutError(f"`{' '.join(argv)}` did not finish within {timeout_s:g}s (killed)") from None
        out.seek(0)
        return Completed(returncode=code, output=out.read().decode(errors="replace"))
