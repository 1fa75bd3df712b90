"""Local-process runtime: each worker is a child process in its own session.

Workers outlive a crashed agent (own session, not killed with it), so a restarted agent can
adopt them. A handle's ref is "pid:starttime": the kernel start time guards against a reused
pid being mistaken for our worker.
"""

import asyncio
import os
import signal
from pathlib import Path

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


class ProcessRuntime:
    name = "process"

    def __init__(self, log_dir: Path, node: str):
        self._log_dir = log_dir
        self._node = node
        self._children: dict[int, asyncio.subprocess.Process] = {}

    async def start(self, launch: WorkerLaunch) -> WorkerHandle:
        log_path = launch.log_path or self._log_dir / f"{launch.pod}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: a worker restored by CRIU must find its log opened in append mode.
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            command = [part.replace("{port}", str(launch.port)) for part in launch.command]
            proc = await asyncio.create_subprocess_exec(
                *command, env=launch.env, stdin=asyncio.subprocess.DEVNULL, stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        finally:
            os.close(log_fd)
        self._children[proc.pid] = proc
        start = _start_time(proc.pid) or "0"
        return WorkerHandle(pod=launch.pod, runtime=self.name, ref=f"{proc.pid}:{start}",
                            endpoint=f"http://127.0.0.1:{launch.port}")

    async def is_alive(self, handle: WorkerHandle) -> bool:
        pid, start = _parse_ref(handle.ref)
        child = self._children.get(pid)
        if child is not None and child.returncode is not None:
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
        """Every live process started for this node, found by the THAW_NODE/THAW_POD variables
        the agent gave it. This finds workers even when the agent died before recording them."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            env = _environ(proc)
            if env.get("THAW_NODE") != self._node or "THAW_POD" not in env:
                continue
            start = _start_time(int(proc.name))
            if start is not None:
                found.append(WorkerHandle(pod=env["THAW_POD"], runtime=self.name, ref=f"{proc.name}:{start}",
                                          endpoint=f"http://127.0.0.1:{env.get('PORT', '0')}"))
        return found

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)
