"""A local N-server NATS cluster (JetStream on every server), from the same nats-server binary
as `servers.start_nats`: for tests of replicated (R3) streams and for trying a cluster by hand.

Each server has its own config file, store dir, client, route and monitoring port, and routes
to every other one (cluster name "thaw"). `start_cluster` returns once every server agrees on a
JetStream meta leader: before that, creating a replicated stream fails.

A single server stays the default everywhere (`thaw up` runs one); this is opt-in.
"""

import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from thaw_core.ports import free_port
from thaw_core.private_files import replace_private
from thaw_core.servers import Server, _spawn, nats_server_binary, wait_for_port

CLUSTER_NAME = "thaw"


@dataclass(frozen=True, slots=True)
class Member:
    """One server's fixed identity: a restarted server keeps its name, ports and store."""

    name: str
    port: int
    cluster_port: int
    monitor_port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats-server.conf"


def member_config(member: Member, peers: list[Member], authorization: str = "") -> str:
    """nats-server's config for `member`: JetStream under its store, routes to every peer, and
    the clients' `authorization` block where given (thaw_core.bus_auth; every member carries
    the same one). Routes are loopback-only and need no login of their own."""
    routes = [f"nats-route://127.0.0.1:{p.cluster_port}" for p in peers if p.name != member.name]
    return "\n".join([
        "# Written by thaw_core.nats_cluster.",
        *([authorization] if authorization else []),
        f"server_name: {json.dumps(member.name)}",
        f"listen: \"127.0.0.1:{member.port}\"",
        f"http: \"127.0.0.1:{member.monitor_port}\"",
        f"jetstream {{ store_dir: {json.dumps(str(member.data_dir / 'jetstream'))} }}",
        f"cluster {{ name: {json.dumps(CLUSTER_NAME)}, listen: \"127.0.0.1:{member.cluster_port}\", "
        f"routes: {json.dumps(routes)} }}",
    ]) + "\n"


@dataclass
class NatsCluster:
    members: list[Member]
    servers: list[Server | None] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        """Every server's client URL: give them all to a client, it moves on when one dies."""
        return [m.url for m in self.members]

    @property
    def pids(self) -> list[int | None]:
        """Each server's pid, None for one that is down."""
        return [s.process.pid if s and s.process.poll() is None else None for s in self.servers]

    def index_of(self, server_name: str) -> int:
        """The index of the server named `server_name` (e.g. a stream's cluster leader)."""
        return [m.name for m in self.members].index(server_name)

    def kill(self, i: int) -> None:
        """kill -9 server i: no goodbye to its peers, nothing flushed."""
        server = self.servers[i]
        if server is not None:
            server.kill()
        self.servers[i] = None

    def restart(self, i: int, timeout_s: float = 30) -> None:
        """Start server i again with its name, ports and store; it catches up from its peers."""
        self.kill(i)
        self.servers[i] = start_member(self.members[i])
        wait_for_meta_leader([self.members[i]], timeout_s)

    def stop(self) -> None:
        for i, server in enumerate(self.servers):
            if server is not None:
                server.stop()
            self.servers[i] = None


def start_cluster(base_dir: Path, size: int = 3, timeout_s: float = 30, authorization: str = "") -> NatsCluster:
    """`size` servers under base_dir/nats-<i>, routed to each other; returns once all of them
    see a JetStream meta leader. Stops whatever it started if that never happens. With
    `authorization` (a users block), only those users may connect; the configs are then 0600."""
    members = [Member(f"thaw-{i}", free_port(), free_port(), free_port(), base_dir / f"nats-{i}")
               for i in range(size)]
    cluster = NatsCluster(members)
    try:
        for member in members:
            member.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            replace_private(member.config_path, member_config(member, members, authorization))
            cluster.servers.append(start_member(member))
        wait_for_meta_leader(members, timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_member(member: Member) -> Server:
    process = _spawn([nats_server_binary(), "-c", str(member.config_path)], member.data_dir / "nats-server.log")
    wait_for_port(member.port, process, 15, f"nats-server {member.name}")
    return Server(member.name, member.url, member.port, process, member.data_dir)


def meta_leader(member: Member) -> str | None:
    """The JetStream meta leader `member` sees (its /jsz), None if none yet or it is down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{member.monitor_port}/jsz", timeout=1) as reply:
            leader = json.load(reply).get("meta_cluster", {}).get("leader")
            return str(leader) if leader else None
    except (OSError, ValueError):
        return None


def wait_for_meta_leader(members: list[Member], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(meta_leader(m) for m in members):
            return
        time.sleep(0.1)
    raise TimeoutError(f"NATS cluster had no JetStream meta leader within {timeout_s}s "
                       f"(seen: {[meta_leader(m) for m in members]})")
