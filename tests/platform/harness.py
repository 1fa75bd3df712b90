"""The whole platform as real processes, for end-to-end and chaos tests.

Each component runs as `python -m <component>` exactly as `thaw up` starts it, with short
timeouts so faults resolve within a test's patience.
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from thaw_core import servers
from thaw_core.ports import free_port
from thaw_core.sandbox import cgroups
from thaw_core.sandbox.network import PodNetwork, overlapping_route, remove_node_network

# The agent's own default restore timeout: an eager restore of a 512 MiB heap under a loaded
# suite has taken over 10 s here, and no test relies on a restore timing out.
RESTORE_LINE = "restore_timeout_s = 30\n"
NODE_CONFIG = """
[node]
name = "{node}"
heartbeat_s = 0.5
force_mock_gpus = true
restore_timeout_s = 30
[[node.mock_gpus]]
model = "Mock-24G"
vram_mib = 24576
[[node.mock_gpus]]
model = "Mock-24G"
vram_mib = 24576
"""


@dataclass
class Harness:
    root: Path
    nats: servers.Server
    redis_url: str
    http_port: int = field(default_factory=free_port)
    node: str = field(default_factory=lambda: free_node_id())
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    # The container runtime on this node (agent and snapshotter), when `container_socket` is set.
    container_socket: Path | None = None
    container_mounts: tuple[Path, ...] = ()
    standby: int = 1  # the snapshotter's staged containers per snapshot

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def args(self, name: str) -> list[str]:
        common = ["--nats", self.nats.url, "--redis", self.redis_url]
        if name == "gateway":
            return ["-m", "gateway", *common, "--port", str(self.http_port), "--lease-ttl", "2", "--lease-hold", "0.3"]
        if name.startswith("placement"):
            return ["-m", "placement", *common, "--name", name, "--node-timeout", "4"]
        if name == "agent":
            config = self.root / "node.toml"
            config.write_text(self._node_config())
            return ["-m", "agents", *common, "--state-dir", str(self.root / "agent"), "--config", str(config)]
        if name == "snapshotter":
            extra = [] if self.container_socket is None else [
                "--runtime", "container", "--podman-socket", str(self.container_socket), "--standby", str(self.standby)]
            return ["-m", "snapshotter", *common, "--node", self.node, "--state-dir", str(self.snapshot_dir),
                    "--shared-dir", str(self.shared_dir), *extra]
        raise ValueError(name)

    def _node_config(self) -> str:
        config = NODE_CONFIG.replace("{node}", self.node)
        if self.container_socket is None:
            return config
        mounts = ", ".join(f'"{m}"' for m in self.container_mounts)
        keys = (f'runtime = "container"\ncontainer_socket = "{self.container_socket}"\n'
                f"container_mounts = [{mounts}]\n")
        # [node] keys go before the [[node.mock_gpus]] tables, which would take them otherwise
        return config.replace(RESTORE_LINE, RESTORE_LINE + keys)

    @property
    def snapshot_dir(self) -> Path:
        """The snapshotter's state: its local tier is `local/`, unpacked images `cache/`."""
        return self.root / "snapshotter"

    @property
    def shared_dir(self) -> Path:
        return self.root / "shared"

    def start(self, name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")
        env = {**os.environ, "THAW_LOG_LEVEL": "INFO"}
        proc = subprocess.Popen([sys.executable, *self.args(name)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(15)

    def restart_nats(self) -> None:
        port, data_dir = self.nats.port, self.nats.data_dir
        self.nats.stop()
        time.sleep(0.5)
        self.nats = servers.start_nats(data_dir, port=port)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nats.kill()
        self.kill_stray_workers()
        remove_node_network(self.node)
        if cgroups.version():
            cgroups.remove_node(self.node)

    def worker_pids(self) -> list[int]:
        """Every live process the agent started for this node (found by its THAW_NODE)."""
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                env = (proc / "environ").read_bytes() if proc.name.isdigit() else b""
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] if env else ""
            except OSError:
                continue
            if f"THAW_NODE={self.node}".encode() in env.split(b"\0") and state != "Z":
                pids.append(int(proc.name))
        return pids

    def kill_stray_workers(self) -> int:
        """Safety net after a test that killed its agent for good: no worker outlives a test."""
        killed = 0
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*.log")))


def free_node_id(prefix: str = "node") -> str:
    """A fresh node id whose pod subnet no link on this host routes yet (another run's bridge,
    podman's network), so the agent's bridge cannot clash with one."""
    routes = subprocess.run(["ip", "-4", "-o", "route", "show"], capture_output=True, text=True).stdout
    while True:
        node = f"{prefix}-{os.urandom(3).hex()}"
        if not overlapping_route(PodNetwork.for_node(node), routes):
            return node


