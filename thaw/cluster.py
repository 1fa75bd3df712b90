"""`thaw up --cluster N`: a fleet of N nodes on this machine, with no single server to lose.

- NATS: an N-server cluster (thaw_core.nats_cluster, N >= 3), every stream replicated on three
  of them (R3), each server carrying the platform's users (thaw_core.bus_auth).
- Store: Valkey primary + replica + three Sentinels (thaw_core.valkey_sentinel); every service
  connects with the `redis+sentinel://` URL and follows a failover.
- Nodes: each its own node id, state dir, agent and (where CRIU works) snapshotter, with one
  snapshot tier shared by all (`snapshots-shared/`), so a snapshot taken on one node restores
  on another. Each node gets two mock GPUs of 24 GiB, even on a machine with real ones: three
  agents sharing one GPU would each count all of its vRAM as theirs.
- Control plane: PLACEMENT_WORKERS placement workers (one queue group; the Redis commit is the
  arbiter) and one gateway on --port.

Every process runs under the one supervisor of `thaw up`: a component that dies is restarted.
`Fleet.kill_node` is the other case, a whole node lost: its agent, snapshotter and workers die
and stay dead, and the platform must carry on without it (tests/fleet).
"""

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agents.identity import default_node_name
from bus_schemas import permissions
from thaw.launcher import (Platform, _add_service, bus_credentials, check_port_free, criu_usable, say,
                           service_credentials, wait_http_ok)
from thaw.platform_record import write_record
from thaw.supervisor import Supervisor
from thaw_core import bus_auth, nats_cluster, servers, valkey_sentinel
from thaw_core.sandbox import cgroups
from thaw_core.store import acl

PLACEMENT_WORKERS = 2
NODE_TIMEOUT_S = 6.0  # placement marks a node lost after this long without a heartbeat
NODE_CONFIG = """# Written by `thaw up --cluster`.
[node]
name = "{name}"
force_mock_gpus = true
[[node.mock_gpus]]
model = "Mock-24G"
vram_mib = 24576
[[node.mock_gpus]]
model = "Mock-24G"
vram_mib = 24576
"""


@dataclass(frozen=True, slots=True)
class Node:
    index: int
    name: str
    state_dir: Path

    @property
    def components(self) -> tuple[str, str]:
        return f"agent-{self.index}", f"snapshotter-{self.index}"


@dataclass
class Fleet(Platform):
    bus: nats_cluster.NatsCluster | None = None
    store: valkey_sentinel.SentinelSetup | None = None
    nodes: list[Node] = field(default_factory=list)

    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def kill_node(self, name: str) -> list[int]:
        """kill -9 node `name` whole, as when its host dies: agent, snapshotter and every worker
        of it, none restarted. Returns the pids killed."""
        node = next(n for n in self.nodes if n.name == name)
        killed = []
        for component in node.components:
            c = self.supervisor.components.pop(component, None)
            if c is not None and c.proc.poll() is None:
                _kill_group(c.proc.pid)
                c.proc.wait()
                killed.append(c.proc.pid)
        for pid in node_worker_pids(name):
            _kill_group(pid)
            killed.append(pid)
        return killed  # its pod network and cgroups go when the fleet stops (node_names)


def node_names(state_dir: Path, size: int) -> list[Node]:
    """Stable per state dir and host, as a single node's name is (agents.identity)."""
    nodes = []
    for i in range(size):
        node_dir = state_dir / "nodes" / f"n{i}"
        nodes.append(Node(i, default_node_name(node_dir / "agent"), node_dir))
    return nodes


def up_cluster(state_dir: Path, size: int, http_port: int) -> Fleet:
    """Start the fleet and return once the gateway answers /healthz (see the module doc)."""
    if size < 3:
        raise ValueError(f"--cluster {size}: a fleet needs at least 3 nodes (NATS keeps each stream on three "
                         "servers); for one node run `thaw up` without --cluster")
    check_port_free(http_port)
    logs, secrets_dir = state_dir / "logs", state_dir / "secrets"
    nodes = node_names(state_dir, size)
    sup = Supervisor(state_dir / "run" / "components.json", say)
    try:
        cluster = _start_nats(sup, state_dir, secrets_dir, nodes)
        store = _start_store(sup, state_dir, secrets_dir)
        nats = servers.Server("nats", ",".join(cluster.urls), cluster.members[0].port,
                              cluster.servers[0].process, state_dir / "nats")  # type: ignore[union-attr]
        redis = servers.Server("valkey", store.url, store.primary.port, store.primary.process, state_dir / "valkey")
        fleet = Fleet(state_dir, nats, redis, f"http://127.0.0.1:{http_port}", sup, bus=cluster, store=store, nodes=nodes)
        members = [{"name": m.name, "port": m.port, "cluster_port": m.cluster_port, "monitor_port": m.monitor_port,
                    "data_dir": str(m.data_dir)} for m in cluster.members]
        write_record(state_dir, nats.url, store.url, [n.name for n in nodes], {"kind": "cluster", "members": members})
        common = ["--nats", nats.url, "--redis", store.url]
        for i in range(PLACEMENT_WORKERS):
            _add_service(sup, f"placement-{i}", [
                "-m", "placement", *common, *service_credentials(secrets_dir, acl.PLACEMENT),
                "--name", f"placement-{i}", "--node-timeout", str(NODE_TIMEOUT_S)], logs)
        say(f"{PLACEMENT_WORKERS} placement workers started (one queue group)")
        snapshots = criu_usable()
        for node in nodes:
            _start_node(sup, node, common, secrets_dir, state_dir / "snapshots-shared", logs, snapshots)
        _add_service(sup, "gateway", ["-m", "gateway", *common, *service_credentials(secrets_dir, acl.GATEWAY),
                                      "--port", str(http_port)], logs)
        wait_http_ok(f"{fleet.gateway_url}/healthz", 30, sup.proc("gateway"), "gateway")
        say(f"gateway ready at {fleet.gateway_url}")
    except BaseException:
        sup.stop()
        raise
    return fleet


def _start_nats(sup: Supervisor, state_dir: Path, secrets_dir: Path, nodes: list[Node]) -> nats_cluster.NatsCluster:
    size = len(nodes)
    say(f"starting a {size}-server NATS cluster (JetStream, R3 streams, a user per role and node) "
        f"... stores under {state_dir / 'nats'}")
    authorization = bus_auth.platform_authorization(secrets_dir, [n.name for n in nodes])
    cluster = nats_cluster.start_cluster(state_dir / "nats", size, authorization=authorization)
    for i, member in enumerate(cluster.members):
        sup.add(f"nats-{i}", _member_starter(cluster, i), member.data_dir / "nats-server.log", server=True)
    operator = bus_credentials(state_dir, permissions.OPERATOR)
    assert operator is not None, "platform_authorization made the operator's credentials"
    asyncio.run(bus_auth.provision_streams(cluster.urls, operator, replicas=3))
    say(f"NATS cluster ready at {','.join(cluster.urls)} (streams on three servers each)")
    return cluster


def _member_starter(cluster: nats_cluster.NatsCluster, i: int) -> Callable[[], subprocess.Popen]:
    """The first call hands over the server started (and joined) already; later ones start it
    again with its name, ports and store, and it catches up from its peers."""
    def start() -> subprocess.Popen:
        server = cluster.servers[i]
        if server is None or server.process.poll() is not None:
            server = cluster.servers[i] = nats_cluster.start_member(cluster.members[i])
        return server.process
    return start


def _start_store(sup: Supervisor, state_dir: Path, secrets_dir: Path) -> valkey_sentinel.SentinelSetup:
    say("starting Valkey: a primary, a replica and three Sentinels (quorum 2) ...")
    store = valkey_sentinel.start_sentinel_setup(state_dir / "valkey", acl.ensure_credentials(secrets_dir), secrets_dir)
    for i, server in enumerate(store.all_servers):
        sup.add(server.name, _store_starter(store, i), server.data_dir / "valkey.log", server=True)
    say(f"Valkey ready behind Sentinel at {store.url}")
    return store


def _store_starter(store: valkey_sentinel.SentinelSetup, i: int) -> Callable[[], subprocess.Popen]:
    def start() -> subprocess.Popen:
        server = store.all_servers[i]
        if server.process.poll() is not None:
            server = store.all_servers[i] = valkey_sentinel.start_again(server, store)
        return server.process
    return start


def _start_node(sup: Supervisor, node: Node, common: list[str], secrets_dir: Path, shared: Path, logs: Path,
                snapshots: bool) -> None:
    agent, snapshotter = node.components
    node.state_dir.mkdir(parents=True, exist_ok=True)
    config = node.state_dir / "node.toml"
    config.write_text(NODE_CONFIG.format(name=node.name))
    args = ["-m", "agents", *common, *service_credentials(secrets_dir, acl.AGENT, node.name),
            "--config", str(config), "--state-dir", str(node.state_dir / "agent")]
    _add_service(sup, agent, [*args, "--expect-snapshotter"] if snapshots else args, logs)
    if snapshots:
        _add_service(sup, snapshotter, ["-m", "snapshotter", *common,
                                        *service_credentials(secrets_dir, acl.SNAPSHOTTER, node.name),
                                        "--node", node.name, "--state-dir", str(node.state_dir / "snapshotter"),
                                        "--shared-dir", str(shared)], logs)
    say(f"node {node.name} started (agent{' and snapshotter' if snapshots else ''}; state in {node.state_dir})")


def node_worker_pids(node: str) -> list[int]:
    """The node's live workers: the processes in its pod cgroups. Not found by their THAW_NODE:
    a worker restored on another node from a snapshot taken on this one carries this node's
    environment. Without cgroups (not root), by THAW_NODE."""
    if cgroups.version():
        return sorted(cgroups.node_members(node))
    mark = f"THAW_NODE={node}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
