"""`thaw up --join PLATFORM_DIR`: start one more node (agent and snapshotter) for a platform that
`thaw up` (one node, or `--cluster N`) runs on this machine from PLATFORM_DIR.

A platform's launcher writes `run/platform.json` in its state dir: where its NATS and Redis
are, its nodes, and how its NATS servers are configured (no secret: the credentials stay in
`secrets/`, 0600). Joining, as root on the same machine:
1. adds the node's bus users (`agent-<node>`, `snapshotter-<node>`) to every NATS server's
   config and reloads it (SIGHUP: connections already open stay), under a lock, so two nodes
   joining at once both get in;
2. runs the node's agent and snapshotter, under a supervisor of its own (its state dir), with
   the platform's URLs, store credentials and shared snapshot tier;
3. returns once placement can see the node (its capacity is in the store).
Ctrl-C stops the node alone; its pods are released and placed elsewhere.
"""

import asyncio
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from agents.identity import default_node_name
from thaw.launcher import _add_service, clear_node_leftovers, criu_usable, operator_creds, say, service_credentials
from thaw.platform_record import RECORD, write_record
from thaw.supervisor import Supervisor
from thaw_core import bus_auth, nats_cluster
from thaw_core.private_files import replace_private
from thaw_core.store import acl


@dataclass
class JoinedNode:
    name: str
    supervisor: Supervisor

    def stop(self) -> None:
        took_s = self.supervisor.stop()
        clear_node_leftovers([self.name])
        say(f"node {self.name} stopped in {took_s:.1f}s")


class JoinError(RuntimeError):
    pass


def read_record(platform_dir: Path) -> dict:
    path = platform_dir / RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise JoinError(f"{path} not found: is {platform_dir} the --state-dir of a running `thaw up`?") from None
    except (OSError, ValueError) as exc:
        raise JoinError(f"{path}: {exc}") from None


def add_node(platform_dir: Path, node: str) -> dict:
    """Give `node` its bus users on every NATS server of the platform (config rewritten, server
    reloaded) and list it in the record; idempotent. Returns the record."""
    with open(platform_dir / RECORD, "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two nodes joining at once: each config keeps both
        record = read_record(platform_dir)
        if node in record["nodes"]:
            return record
        nodes = [*record["nodes"], node]
        secrets_dir = platform_dir / "secrets"
        bus = record["bus"]
        if bus["kind"] == "cluster":
            members = [nats_cluster.Member(m["name"], m["port"], m["cluster_port"], m["monitor_port"],
                                           Path(m["data_dir"])) for m in bus["members"]]
            authorization = bus_auth.platform_authorization(secrets_dir, nodes)
            for m in members:
                replace_private(m.config_path, nats_cluster.member_config(m, members, authorization))
        else:
            bus_auth.write_platform_config(secrets_dir, nodes, listen=bus["listen"], store_dir=Path(bus["store_dir"]))
        for pid in nats_pids(platform_dir):
            os.kill(pid, signal.SIGHUP)
        record["nodes"] = nodes
        write_record(platform_dir, record["nats"], record["redis"], nodes, bus)
        return record


def nats_pids(platform_dir: Path) -> list[int]:
    """The platform's running nats-server processes, from its supervisor's status file."""
    status = json.loads((platform_dir / "run" / "components.json").read_text())["components"]
    return [c["pid"] for name, c in status.items() if name == "nats-server" or name.startswith("nats-")]


def join(platform_dir: Path, state_dir: Path, config: Path | None) -> JoinedNode:
    """Steps 1 to 3 of the module doc; raises JoinError saying what to do."""
    from agents.config import load_agent_settings
    from thaw.cluster import NODE_CONFIG

    platform_dir = platform_dir.resolve()
    record = read_record(platform_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = state_dir / "node.toml"
        config.write_text(NODE_CONFIG.format(name=default_node_name(state_dir / "agent")))
    node = load_agent_settings(config, "", "", state_dir / "agent").node
    say(f"joining node {node} to the platform of {platform_dir} ...")
    record = add_node(platform_dir, node)
    say(f"bus users for {node} added; NATS reloaded")
    secrets_dir, logs = platform_dir / "secrets", state_dir / "logs"
    common = ["--nats", record["nats"], "--redis", record["redis"]]

    def credentials(role: str) -> list[str]:
        return service_credentials(secrets_dir, role, node)
    sup = Supervisor(state_dir / "run" / "components.json", say)
    try:
        snapshots = criu_usable()
        agent = ["-m", "agents", *common, *credentials(acl.AGENT), "--config", str(config),
                 "--state-dir", str(state_dir / "agent")]
        _add_service(sup, "agent", [*agent, "--expect-snapshotter"] if snapshots else agent, logs)
        if snapshots:
            _add_service(sup, "snapshotter", ["-m", "snapshotter", *common, *credentials(acl.SNAPSHOTTER),
                                              "--node", node, "--state-dir", str(state_dir / "snapshotter"),
                                              "--shared-dir", record["shared_dir"]], logs)
        wait_until_listed(record["redis"], platform_dir, node, sup)
    except BaseException:
        sup.stop()
        raise
    say(f"node {node} joined: placement sees its capacity")
    return JoinedNode(node, sup)


def wait_until_listed(redis_url: str, platform_dir: Path, node: str, sup: Supervisor, timeout_s: float = 60) -> None:
    from thaw_core.store.client import connect_redis
    from thaw_core.store.nodes import Nodes

    since_ms = int(time.time() * 1000)

    async def listed() -> bool:
        r = connect_redis(redis_url, operator_creds(platform_dir))
        try:
            return any(n.name == node and n.heartbeat_ms >= since_ms for n in await Nodes(r).all())
        finally:
            await r.aclose()

    deadline = time.monotonic() + timeout_s
    while not asyncio.run(listed()):
        sup.check()
        if time.monotonic() > deadline:
            raise JoinError(f"node {node}'s agent did not report its capacity within {timeout_s:g}s; "
                            f"see {sup.components['agent'].log_path}")
        time.sleep(0.5)
