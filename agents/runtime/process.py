"""Local-process runtime: each worker is a child process in its own session.

Workers outlive a crashed agent (own session, not killed with it), so a restarted agent can
adopt them. A handle's ref is "pid:starttime": the kernel start time guards against a reused
pid being mistaken for our worker.

Where the node allows it (root, or CAP_SYS_ADMIN), a worker runs as
``unshare --pid --fork setsid CMD``: the init of its own PID namespace, leading its own
session. That is the shape the snapshotter can checkpoint with CRIU and restore any number of
times beside the original (a restored copy gets a fresh PID namespace, so its pid never
collides). The worker's pid is unshare's child, the one we signal, track and dump; unshare
itself only waits for it. No ``--kill-child``: that parent-death signal would be dumped with
the worker and kill every restored copy as soon as CRIU exits. As a namespace init the worker
must handle SIGTERM itself (the kernel ignores default-action signals for PID 1); one that
does not is SIGKILLed after the stop grace.
Without unshare rights workers start plainly, and the node simply has no snapshots.
"""

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from thaw_core import spawn

from agents.identity import TOKEN_ENV
from agents.runtime.base import WorkerHandle, WorkerLaunch


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat, or None if the process is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _environ(proc: Path) -> dict[str, str]:
    try:
        raw = (proc / "environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _parse_ref(ref: str) -> tuple[int, str]:
    pid, start = ref.split(":", 1)
    return int(pid), start


def ref_of(pid: int) -> str | None:
    """The "pid:starttime" ref of a live process, None if it is gone."""
    start = _start_time(pid)
    return f"{pid}:{start}" if start is not None else None


def pid_namespaces_available() -> bool:
    """Whether this process may start workers in their own PID namespace (needs CAP_SYS_ADMIN)."""
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _is_worker_root(proc: Path) -> bool:
    """True for a worker itself: the init of its own PID namespace, or (started without a
    namespace) any process but an unshare wrapper, which carries the worker's environment too."""
    try:
        status = (proc / "status").read_text()
        comm = (proc / "comm").read_text().strip()
    except OSError:
        return False
    nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
    if len(nspid) > 1:
        return nspid[-1] == "1"
    return comm != "unshare"


class ProcessRuntime:
    name = "process"

    def __init__(self, log_dir: Path, node: str, token: str, pid_namespace: bool | None = None):
        """`token` marks the workers this agent starts (agents/identity.py); `pid_namespace`:
        start workers under unshare (None: if this process may)."""
        self._log_dir = log_dir
        self._node, self._token = node, token
        self.pid_namespace = pid_namespaces_available() if pid_namespace is None else pid_namespace
        self._children: dict[int, spawn.Child] = {}  # worker pid -> process we reap

    async def start(self, launch: WorkerLaunch) -> WorkerHandle:
        log_path = launch.log_path or self._log_dir / f"{launch.pod}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: a worker restored by CRIU must find its log opened in append mode.
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            command = [part.replace("{port}", str(launch.port)) for part in launch.command]
            wrapper = ["unshare", "--pid", "--fork", "setsid"] if self.pid_namespace else []
            env = {**launch.env, TOKEN_ENV: self._token}
            proc = spawn.start([*wrapper, *command], env=env, stdout=log_fd, stderr=spawn.STDOUT,
                               new_session=True)
        finally:
            os.close(log_fd)
        pid = await self._forked_child(proc) if self.pid_namespace else proc.pid
        self._children[pid] = proc
        start = _start_time(pid) or "0"
        return WorkerHandle(pod=launch.pod, runtime=self.name, ref=f"{pid}:{start}",
                            endpoint=f"http://127.0.0.1:{launch.port}")

    @staticmethod
    async def _forked_child(unshare: spawn.Child, timeout_s: float = 10.0) -> int:
        """The pid of the worker unshare forked (the namespace init). Raises OSError when
        unshare exits or forks nothing in time."""
        children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            try:
                kids = children.read_text().split()
            except OSError:
                kids = []
            if kids:
                return int(kids[0])
            if unshare.poll() is not None:
                break
            await asyncio.sleep(0.002)
        raise OSError(f"unshare (pid {unshare.pid}) did not start the worker; exit code {unshare.returncode}")

    async def is_alive(self, handle: WorkerHandle) -> bool:
        pid, start = _parse_ref(handle.ref)
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            return False
        return _start_time(pid) == start

    async def stop(self, handle: WorkerHandle, grace_s: float = 10.0) -> None:
        pid, _ = _parse_ref(handle.ref)
        if not await self.is_alive(handle):
            self._children.pop(pid, None)
            return
        self._signal_group(pid, signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + grace_s
        while await self.is_alive(handle) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if await self.is_alive(handle):
            self._signal_group(pid, signal.SIGKILL)
        child = self._children.pop(pid, None)
        if child is not None:
            await child.wait()

    async def running(self) -> list[WorkerHandle]:
        """Every live process this agent started, found by the THAW_NODE/THAW_POD variables and
        the agent's token it gave them. This finds workers even when the agent died before
        recording them, and never another platform's processes."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            env = _environ(proc)
            if env.get("THAW_NODE") != self._node or env.get(TOKEN_ENV) != self._token or "THAW_POD" not in env \
                    or not _is_worker_root(proc):
                continue
            start = _start_time(int(proc.name))
            if start is not None:
                found.append(WorkerHandle(pod=env["THAW_POD"], runtime=self.name, ref=f"{proc.name}:{start}",
                                          endpoint=f"http://127.0.0.1:{env.get('PORT', '0')}"))
        return found

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        # A worker leads its own session and process group (a restored one too, seen from here),
        # so the group reaches its helpers; the direct signal covers a worker that is not.
        for send in (os.killpg, os.kill):
            try:
                send(pid, sig)
                return
            except (ProcessLookupError, PermissionError):
                continue
