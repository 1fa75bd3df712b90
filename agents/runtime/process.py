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

As root with the tools for it, a worker runs sandboxed (thaw_core/sandbox): as its function's
own uid, in its own user, PID, network and mount namespaces and its own cgroup, answering at
its own address on the node's pod bridge. That is the default wherever it is possible; the
endpoint is then http://<pod address>:<port>, and the worker must listen on $HOST (0.0.0.0).
"""

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from thaw_core import spawn
from thaw_core.sandbox import cgroups, enter, network
from thaw_core.process_refs import parse_ref, start_time
from thaw_core.sandbox.cgroups import Limits

from agents.identity import TOKEN_ENV
from agents.runtime.base import WorkerHandle, WorkerLaunch

log = logging.getLogger(__name__)


def _environ(proc: Path) -> dict[str, str]:
    try:
        raw = (proc / "environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _descendants(pid: int) -> set[int]:
    """`pid` and every process under it, from /proc/<pid>/task/*/children."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in found:
            continue
        found.add(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def exit_status(returncode: int | None) -> str:
    """How a process ended, from its return code (negative: the signal); "" while it runs."""
    if returncode is None:
        return ""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if returncode > 128 and returncode - 128 in {s.value for s in signal.Signals}:
        # a shell or unshare that passes its child's death on exits 128 + signal
        return f"exited with exit code {returncode} (signal {signal.Signals(returncode - 128).name})"
    return f"exited with exit code {returncode}"


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


def sandbox_available() -> bool:
    """Whether workers can be sandboxed here: root, the network tools, and user namespaces."""
    if not network.available():
        return False
    try:
        return subprocess.run(["unshare", "--user", "--mount", "--pid", "--net", "--fork", "true"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def needed_paths(command: tuple[str, ...]) -> list[str]:
    """What a sandboxed worker must see of the host: the platform's Python (a venv points into
    its install) and the folders of the files its command names."""
    paths = [sys.base_prefix, sys.prefix]
    for part in command:
        if part.startswith("/") and os.path.exists(part):
            real = os.path.realpath(part)
            paths.append(real if os.path.isdir(real) else os.path.dirname(real))
    return list(dict.fromkeys(paths))


class ProcessRuntime:
    name = "process"

    def __init__(self, log_dir: Path, node: str, token: str, pid_namespace: bool | None = None,
                 sandbox: bool | None = None, pod_cidr: str = ""):
        """`token` marks the workers this agent starts (agents/identity.py); `pid_namespace`:
        start workers under unshare (None: if this process may); `sandbox`: the full sandbox
        (None: wherever possible; it implies a PID namespace)."""
        self._log_dir = log_dir
        self._node, self._token = node, token
        self.sandbox = sandbox_available() if sandbox is None else sandbox
        self.pid_namespace = self.sandbox or (pid_namespaces_available() if pid_namespace is None else pid_namespace)
        self._pod_cidr = pod_cidr
        self.network = network.PodNetwork.for_node(node, pod_cidr)  # its subnet as it is: network.current
        self._stage = Path("/run/thaw-sandbox") / self.network.tag
        self._children: dict[int, spawn.Child] = {}  # worker pid -> process we reap

    def prepare(self, pod: str, limits: Limits) -> None:
        if self.sandbox and cgroups.version():
            cgroups.create(self._node, pod, limits)

    def exit_reason(self, handle: WorkerHandle) -> str:
        if self.sandbox and cgroups.oom_kills(cgroups.pod_dirs(self._node, handle.pod)):
            return "killed by the kernel for going over its memory limit (resources.memory_mib)"
        pid, _ = parse_ref(handle.ref)
        child = self._children.get(pid)
        # unshare and the sandbox launcher exit as their worker did; an adopted worker has no
        # child here, so how it ended is not known
        return exit_status(child.poll()) if child is not None else ""

    async def start(self, launch: WorkerLaunch) -> WorkerHandle:
        if self.sandbox:
            return await self._start_sandboxed(launch)
        log_path = launch.log_path or self._log_dir / f"{launch.pod}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: a worker restored by CRIU must find its log opened in append mode.
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            command = [part.replace("{port}", str(launch.port)) for part in launch.command]
            wrapper = ["unshare", "--pid", "--fork", "setsid"] if self.pid_namespace else []
            env = {**launch.env, TOKEN_ENV: self._token, "HOST": "127.0.0.1"}
            proc = spawn.start([*wrapper, *command], env=env, stdout=log_fd, stderr=spawn.STDOUT,
                               new_session=True)
        finally:
            os.close(log_fd)
        pid = await self._forked_child(proc) if self.pid_namespace else proc.pid
        self._children[pid] = proc
        start = start_time(pid) or "0"
        return WorkerHandle(pod=launch.pod, runtime=self.name, ref=f"{pid}:{start}",
                            endpoint=f"http://127.0.0.1:{launch.port}")

    async def _start_sandboxed(self, launch: WorkerLaunch) -> WorkerHandle:
        if launch.uid <= 0:
            raise ValueError(f"pod {launch.pod}: a sandboxed worker needs its function's uid "
                             "(deployed before uids existed? deploy the function again)")
        log_path = launch.log_path or self._log_dir / f"{launch.pod}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch(mode=0o600, exist_ok=True)
        dirs = cgroups.create(self._node, launch.pod, launch.limits) if launch.limits and cgroups.version() else ()
        command = [part.replace("{port}", str(launch.port)) for part in launch.command]
        self._stage.mkdir(parents=True, exist_ok=True)
        needed = [*needed_paths(launch.command), str(log_path.parent)]
        argv = enter.argv(command, log_path, cgroups.join_script(dirs), needed, str(self._stage))
        env = {**launch.env, TOKEN_ENV: self._token, "HOST": "0.0.0.0", "HOME": "/tmp", "TMPDIR": "/tmp"}
        with open(log_path, "ab", buffering=0) as log:  # the launcher's own errors, before the worker's
            proc = spawn.start(argv, env=env, stdout=log, stderr=spawn.STDOUT, new_session=True)
        try:
            await self._map_ids(proc, launch.uid)
            pid = await self._forked_child(proc)
            self.network = await asyncio.to_thread(network.current, self._node, self._pod_cidr)
            address = await network.attach(self.network, pid)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        self._children[pid] = proc
        start = start_time(pid) or "0"
        return WorkerHandle(pod=launch.pod, runtime=self.name, ref=f"{pid}:{start}",
                            endpoint=f"http://{address}:{launch.port}")

    @staticmethod
    async def _map_ids(launcher: spawn.Child, uid: int, timeout_s: float = 10.0) -> None:
        """Write the uid/gid maps of the launcher's new user namespace once it exists."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not enter.in_new_user_namespace(launcher.pid):
            if launcher.poll() is not None or asyncio.get_running_loop().time() > deadline:
                raise OSError(f"the sandbox launcher (pid {launcher.pid}) exited before its user namespace "
                              f"was made (exit code {launcher.returncode}); see the pod's log")
            await asyncio.sleep(0.002)
        enter.write_id_maps(launcher.pid, uid)

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
        pid, start = parse_ref(handle.ref)
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            return False
        if start_time(pid) == start:
            return True
        if child is not None:
            # The worker is gone and the launcher that waits for it (unshare) ends a moment
            # later: wait that moment, so that exit_reason can tell how the worker ended.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), 1.0)
        return False

    async def stop(self, handle: WorkerHandle, grace_s: float = 10.0) -> None:
        pid, _ = parse_ref(handle.ref)
        if not await self.is_alive(handle):
            self._children.pop(pid, None)
            await self._forget_cgroup(handle.pod)
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
        await self._forget_cgroup(handle.pod)

    async def forget(self, pod: str) -> None:
        await self._forget_cgroup(pod)

    async def close(self) -> None:
        """Take the node's bridge down once no worker is left on it (a node that stops cleanly
        leaves nothing behind); workers left to adopt keep it."""
        if self.sandbox:
            try:
                await network.remove_bridge_if_unused(self.network)
            except network.NetworkError as exc:
                log.warning("could not remove the pod bridge %s: %s", self.network.bridge, exc)
            if cgroups.version():
                cgroups.remove_node(self._node)  # kept while a worker is left to adopt

    def main_pid(self, handle: WorkerHandle) -> int | None:
        return parse_ref(handle.ref)[0]

    def pids(self, handle: WorkerHandle) -> frozenset[int]:
        pid, _ = parse_ref(handle.ref)
        if self.sandbox and cgroups.version():
            return cgroups.members(cgroups.pod_dirs(self._node, handle.pod)) or frozenset({pid})
        return frozenset(_descendants(pid))

    async def _forget_cgroup(self, pod: str, wait_s: float = 2.0) -> None:
        """Remove the pod's cgroup; the kernel frees it a moment after its last process."""
        if not (self.sandbox and cgroups.version()):
            return
        dirs = cgroups.pod_dirs(self._node, pod)
        deadline = asyncio.get_running_loop().time() + wait_s
        while not cgroups.remove(dirs) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

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
            if self.sandbox and cgroups.version() and not cgroups.in_node(int(proc.name), self._node):
                # Restored on another node of this host from a snapshot taken here: it carries
                # this node's environment, but it is that node's worker (its cgroup says so).
                continue
            start = start_time(int(proc.name))
            if start is not None:
                address = network.address_of(int(proc.name)) if self.sandbox else ""
                found.append(WorkerHandle(pod=env["THAW_POD"], runtime=self.name, ref=f"{proc.name}:{start}",
                                          endpoint=f"http://{address or '127.0.0.1'}:{env.get('PORT', '0')}"))
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
