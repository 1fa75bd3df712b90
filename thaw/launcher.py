"""`thaw up`: the whole platform on one machine, each component its own process.

Order: nats-server, valkey-server, placement, agent, snapshotter, gateway. A component that dies
is restarted; Ctrl-C stops them all within a bound (see supervisor.py). State lives under `--state-dir` (default `.thaw/`): JetStream store, Redis append-only
file, worker logs, snapshots (`snapshotter/` is the node-local tier, `snapshots-shared/` stands
for the cluster-shared tier), and the API key printed at first start.

The snapshotter starts only when CRIU is usable here (`criu check` passes, which needs root and
CRIU 4.x); otherwise `thaw up` says why and every pod cold-starts.
"""

import asyncio
import errno
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bus_schemas import permissions
from thaw.platform_record import write_record
from thaw.supervisor import Supervisor
from thaw_core import bus_auth, servers
from thaw_core.sandbox import cgroups
from thaw_core.sandbox.network import remove_node_network
from thaw_core.store import acl
from thaw_core.ports import free_port


@dataclass
class Platform:
    state_dir: Path
    nats: servers.Server
    redis: servers.Server
    gateway_url: str
    supervisor: Supervisor
    node: str = ""

    @property
    def procs(self) -> dict[str, subprocess.Popen]:
        """The services' current processes (a restarted one has a new process)."""
        return {n: c.proc for n, c in self.supervisor.components.items() if not c.server}

    def node_names(self) -> list[str]:
        return [self.node] if self.node else []

    def stop(self) -> None:
        took_s = self.supervisor.stop()
        clear_node_leftovers(self.node_names())
        say(f"stopped everything in {took_s:.1f}s")


def clear_node_leftovers(nodes: list[str]) -> None:
    """Once every process of `nodes` is gone (the supervisor stopped them and killed what they
    left): their pod networks and cgroup directories. An agent that stops while workers are
    left to adopt, or is killed, cannot remove them; thousands left behind slow the host."""
    for name in nodes:
        remove_node_network(name)
        if cgroups.version():
            cgroups.remove_node(name)


class PortInUse(RuntimeError):
    def __init__(self, port: int):
        super().__init__(f"port {port} is already in use on 127.0.0.1 (another `thaw up`, or another program, "
                         f"listens there): pick a free one with `thaw up --port N`, or stop what holds {port}")
        self.port = port


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise PortInUse where something listens on `port`. Checked before anything starts: once
    the services run, whatever holds the port answers the gateway's /healthz in its place."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as the gateway binds (asyncio sets it): a port merely in TIME_WAIT is free to it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(port) from None
            raise


def say(msg: str) -> None:
    print(f"[thaw] {msg}", flush=True)


def component_starter(name: str, args: list[str], log_dir: Path) -> Callable[[], subprocess.Popen]:
    """Starts `python ARGS` as its own session, output appended to logs/<name>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)

    def start() -> subprocess.Popen:
        with open(log_dir / f"{name}.log", "ab") as log:
            return subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    return start


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not answer {url} within {timeout_s}s")


def up(state_dir: Path, config: Path | None, http_port: int, nats_port: int | None = None,
       redis_port: int | None = None) -> Platform:
    """Start every component under one supervisor and return once the gateway answers /healthz.
    Each server keeps its port across restarts, so the URLs handed to the services stay valid.
    Raises PortInUse, having started nothing, where `http_port` is taken."""
    check_port_free(http_port)
    logs = state_dir / "logs"
    sup = Supervisor(state_dir / "run" / "components.json", say)
    try:
        from agents.config import load_agent_settings

        secrets_dir = state_dir / "secrets"
        node = load_agent_settings(config, "", "", state_dir / "agent").node
        say(f"starting nats-server (JetStream; a user per role, node {node}) ... store in {state_dir / 'nats'}")
        nats_port = nats_port or free_port()
        bus_users = bus_auth.server_args(bus_auth.write_platform_config(
            secrets_dir, [node], listen=f"127.0.0.1:{nats_port}", store_dir=state_dir / "nats"))
        nats = servers.start_nats(state_dir / "nats", port=nats_port, log_path=logs / "nats-server.log",
                                  config_args=bus_users)
        sup.add("nats-server", _restarts_of(nats, lambda: servers.start_nats(
            state_dir / "nats", port=nats.port, log_path=logs / "nats-server.log", config_args=bus_users)),
            logs / "nats-server.log", server=True)
        operator = bus_credentials(state_dir, permissions.OPERATOR)
        assert operator is not None, "write_platform_config made the operator's credentials"
        asyncio.run(bus_auth.provision_streams(nats.url, operator))
        say(f"nats-server ready at {nats.url} (streams provisioned; credentials in {secrets_dir})")
        say("starting valkey-server (Redis protocol; a user per role, no default user) ...")
        users = acl.valkey_args(acl.write_acl_file(state_dir / "valkey-users.acl", acl.ensure_credentials(secrets_dir)))
        redis = servers.start_redis(state_dir / "redis", port=redis_port, log_path=logs / "redis-server.log",
                                    persist=True, extra_args=users)
        sup.add("valkey-server", _restarts_of(redis, lambda: servers.start_redis(
            state_dir / "redis", port=redis.port, log_path=logs / "redis-server.log", persist=True, extra_args=users)),
            logs / "redis-server.log", server=True)
        say(f"valkey-server ready at {redis.url}")
        platform = Platform(state_dir, nats, redis, f"http://127.0.0.1:{http_port}", sup, node=node)
        write_record(state_dir, nats.url, redis.url, [node],
                     {"kind": "single", "listen": f"127.0.0.1:{nats_port}", "store_dir": str(state_dir / "nats")})
        common = ["--nats", nats.url, "--redis", redis.url]

        def credentials(role: str) -> list[str]:
            return service_credentials(secrets_dir, role, node)
        _add_service(sup, "placement", ["-m", "placement", *common, *credentials(acl.PLACEMENT)], logs)
        say("placement worker started")
        agent_args = ["-m", "agents", *common, *credentials(acl.AGENT), "--state-dir", str(state_dir / "agent")]
        if config is not None:
            agent_args += ["--config", str(config)]
        snapshotter_args = _snapshotter_args(state_dir, config, [*common, *credentials(acl.SNAPSHOTTER)])
        if snapshotter_args:
            agent_args += ["--expect-snapshotter"]  # its silence then marks the node degraded
        _add_service(sup, "agent", agent_args, logs)
        say("node agent started")
        if snapshotter_args:
            _add_service(sup, "snapshotter", snapshotter_args, logs)
            say("snapshotter started: warm workers are snapshotted once, later pods restore from them")
        _add_service(sup, "gateway", ["-m", "gateway", *common, *credentials(acl.GATEWAY), "--port", str(http_port)], logs)
        wait_http_ok(f"{platform.gateway_url}/healthz", 30, sup.proc("gateway"), "gateway")
        say(f"gateway ready at {platform.gateway_url}")
    except BaseException:
        sup.stop()
        raise
    return platform


def _restarts_of(first: servers.Server, again: Callable[[], servers.Server]) -> Callable[[], subprocess.Popen]:
    """The first call hands over the server already started (and waited for); later calls
    start it again on the same port."""
    pending = [first]

    def start() -> subprocess.Popen:
        return (pending.pop() if pending else again()).process
    return start


def _add_service(sup: Supervisor, name: str, args: list[str], logs: Path) -> None:
    sup.add(name, component_starter(name, args, logs), logs / f"{name}.log")


def service_credentials(secrets_dir: Path, role: str, node: str = "") -> list[str]:
    """The flags that give a service its role's store credentials and its bus user's (one per
    node for the node roles, agent and snapshotter)."""
    bus_user = permissions.user_name(role, node if role in permissions.NODE_ROLES else "")
    return ["--redis-credentials", str(acl.credentials_path(secrets_dir, role)),
            "--nats-credentials", str(bus_auth.credentials_path(secrets_dir, bus_user))]


def criu_usable() -> bool:
    """Whether this host can snapshot (CRIU found and passing `criu check`); says which, or why
    not and that every pod cold-starts."""
    from snapshotter.criu import find_criu
    from snapshotter.errors import CriuMissing

    try:
        criu = asyncio.run(find_criu())
    except CriuMissing as exc:
        say(f"snapshots off, every pod cold-starts: {exc}")
        return False
    say(f"CRIU {criu.version} passes `criu check`: a snapshotter runs beside each node's agent")
    return True


def _snapshotter_args(state_dir: Path, config: Path | None, common: list[str]) -> list[str] | None:
    """Arguments for this node's snapshotter, or None (said why) when CRIU is not usable."""
    from agents.config import load_agent_settings

    if not criu_usable():
        return None
    agent = load_agent_settings(config, "", "", state_dir / "agent")  # the node name and runtime the agent uses
    container = [] if agent.runtime != "container" else [
        "--runtime", "container", "--podman-socket", str(agent.container_socket)]
    return ["-m", "snapshotter", *common, "--node", agent.node, "--state-dir", str(state_dir / "snapshotter"),
            "--shared-dir", str(state_dir / "snapshots-shared"), *container]


def ensure_api_key(state_dir: Path, redis_url: str) -> str:
    """The key saved at first start (`.thaw/credentials`), created if missing or unknown."""
    import asyncio

    from thaw_core.store.apikeys import ApiKeys
    from thaw_core.store.client import connect_redis

    path = state_dir / "credentials"

    async def check_or_create() -> str:
        r = connect_redis(redis_url, operator_creds(state_dir))
        try:
            keys = ApiKeys(r)
            if path.exists():
                key = path.read_text().strip()
                if await keys.tenant_of(key):
                    return key
            key = await keys.create("default")
            path.write_text(key + "\n")
            os.chmod(path, 0o600)
            return key
        finally:
            await r.aclose()

    return asyncio.run(check_or_create())


def bus_credentials(state_dir: Path, role: str) -> bus_auth.Credentials | None:
    """A platform-wide bus user's credentials `thaw up` made in `state_dir` (client, operator),
    None where it made none."""
    path = bus_auth.credentials_path(state_dir / "secrets", permissions.user_name(role))
    return bus_auth.read_credentials(path, permissions.user_name(role)) if path.exists() else None


def operator_creds(state_dir: Path) -> acl.Creds | None:
    """The operator's store credentials `thaw up` made in `state_dir`, None if there are none."""
    path = acl.credentials_path(state_dir / "secrets", acl.OPERATOR)
    return acl.read_credentials(path, acl.OPERATOR) if path.exists() else None


__all__ = ["Platform", "PortInUse", "up", "ensure_api_key", "free_port", "say"]
