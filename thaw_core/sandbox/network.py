"""A pod's network: a veth from the node's bridge into the worker's network namespace, and an
address of its own on the node's pod subnet.

The kernel is the address allocator: slot i of the subnet is taken by creating the host end
`th<tag><i>`, and link names are unique, so two callers (the agent starting one pod, the
snapshotter restoring another) can never take one slot; when a worker's namespace dies with it,
its veth goes too and the slot is free again, so nothing leaks.

The bridge's ports are isolated from each other, and the node does not forward what arrives on
the bridge: a worker reaches the node's address and nothing else, not another pod and not past
the node.

CRIU cannot recreate the veth here (netlink refuses the peer-in-namespace request), so a worker
is dumped with the inner end of its veth moved out of its namespace, parked in the node's as
`tp<tag><i>` (`park`), and moved back right after (`unpark`); a restored copy gets a fresh
veth (`attach`). Parking keeps the pair, so the host end keeps holding the worker's slot while
it is dumped: a pod attached meanwhile cannot take its address. A snapshotter that dies with a
peer parked leaves the pair behind; the next one removes it (`remove_parked`).
"""

import asyncio
import dataclasses
import fcntl
import hashlib
import ipaddress
import os
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from thaw_core import spawn

INSIDE = "eth0"
SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B  # linux/sockios.h
FIRST_SLOT = 2  # .1 is the bridge


class NetworkError(OSError):
    """The pod network could not be set up; the message says which step and why."""


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """One node's pod network: its bridge and subnet, both derived from the node id so two
    platforms on one host rarely share them (or give one: `pod_cidr`). The derived subnets lie in
    10.112.0.0-10.239.255.255, clear of podman's 10.88.0.0/16, the 10.96.0.0/12 that Kubernetes
    gives services and flannel's 10.244.0.0/16; `current` passes over one another link routes
    already, and `ensure_bridge` refuses one (a given `pod_cidr`, say) that overlaps."""

    tag: str
    bridge: str
    subnet: ipaddress.IPv4Network

    @staticmethod
    def for_node(node: str, cidr: str = "") -> "PodNetwork":
        """The node's network with `cidr`, or with its first derived subnet (see `current`)."""
        tag = hashlib.sha256(node.encode()).hexdigest()[:5]
        subnet = ipaddress.IPv4Network(cidr) if cidr else next(derived_subnets(node))
        return PodNetwork(tag=tag, bridge=f"thb{tag}", subnet=subnet)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    def slots(self) -> range:
        return range(FIRST_SLOT, self.subnet.num_addresses - 1)

    def host_end(self, slot: int) -> str:
        return f"th{self.tag}{slot:x}"

    def parked_end(self, slot: int) -> str:
        """The inner end's name while it is parked in the node's namespace (`park`)."""
        return f"tp{self.tag}{slot:x}"

    def address(self, slot: int) -> ipaddress.IPv4Address:
        return self.subnet.network_address + slot

    def slot_of(self, address: str) -> int:
        return int(ipaddress.IPv4Address(address)) - int(self.subnet.network_address)


def derived_subnets(node: str, tries: int = 64) -> Iterator[ipaddress.IPv4Network]:
    """The /22s a node's pod subnet may take, in its own order (from the node id, so the agent
    and the snapshotter of a node list them alike), all in 10.112.0.0-10.239.255.255."""
    for i in range(tries):
        digest = hashlib.sha256(node.encode() if i == 0 else f"{node}/{i}".encode()).digest()
        yield ipaddress.IPv4Network(f"10.{112 + digest[5] % 128}.{digest[6] % 64 * 4}.0/22")


def current(node: str, cidr: str = "") -> PodNetwork:
    """The node's pod network as it is: with `cidr` when given; else with the subnet its bridge
    has, once the bridge exists; else with the first derived subnet that no link on this host
    routes (a leftover bridge of another node, say), which `ensure_bridge` then gives it. The
    agent and the snapshotter of a node both ask here, so they agree on the subnet."""
    net = PodNetwork.for_node(node, cidr)
    if cidr:
        return net
    have = bridge_subnet(net.bridge)
    if have is not None:
        return dataclasses.replace(net, subnet=have)
    routes = subprocess.run(["ip", "-4", "-o", "route", "show"], capture_output=True, text=True).stdout
    for subnet in derived_subnets(node):
        candidate = dataclasses.replace(net, subnet=subnet)
        if not overlapping_route(candidate, routes):
            return candidate
    return net  # every candidate taken: ensure_bridge says so, naming the route


def bridge_subnet(bridge: str) -> ipaddress.IPv4Network | None:
    """The IPv4 subnet of link `bridge` (its address and netmask, by ioctl: no tool to spawn);
    None when it does not exist or has no address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        name = struct.pack("256s", bridge[:15].encode())
        try:
            address = fcntl.ioctl(s.fileno(), SIOCGIFADDR, name)[20:24]
            netmask = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, name)[20:24]
        except OSError:
            return None
    return ipaddress.IPv4Network(f"{socket.inet_ntoa(address)}/{socket.inet_ntoa(netmask)}", strict=False)


async def _ip(*lines: str, netns_pid: int | None = None) -> None:
    """Run `ip -batch` over `lines`, in the network namespace of `netns_pid` when given."""
    with tempfile.NamedTemporaryFile("w", suffix=".ip") as batch:
        batch.write("\n".join(lines) + "\n")
        batch.flush()
        enter = ["nsenter", "-t", str(netns_pid), "-n"] if netns_pid else []
        done = await spawn.run([*enter, "ip", "-batch", batch.name], timeout_s=20)
    if done.returncode:
        raise NetworkError(f"`ip` failed ({'; '.join(lines)}): {done.output.strip()[-300:]}")


def _write_sysctl(path: str, value: str) -> None:
    Path(path).write_text(value)


async def ensure_bridge(net: PodNetwork) -> None:
    """Create the node's bridge with its address, if missing; idempotent. The bridge does not
    forward (no route off the node for pods) and keeps no IPv6 link-local chatter."""
    if not Path(f"/sys/class/net/{net.bridge}").exists():
        try:
            await _ip(f"link add {net.bridge} type bridge")
        except NetworkError:
            if not Path(f"/sys/class/net/{net.bridge}").exists():  # another process made it first
                raise
    _write_sysctl(f"/proc/sys/net/ipv4/conf/{net.bridge}/forwarding", "0")
    addr = f"{net.gateway}/{net.subnet.prefixlen}"
    have = (await spawn.run(["ip", "-4", "-o", "addr", "show", "dev", net.bridge])).output
    if f" {addr} " not in have:
        clash = overlapping_route(net, (await spawn.run(["ip", "-4", "-o", "route", "show"])).output)
        if clash:
            # Two links routing one subnet would send a pod's packets to the other one: its
            # probes time out and it looks broken, so say it plainly instead.
            raise NetworkError(f"the pod subnet {net.subnet} of bridge {net.bridge} overlaps the route "
                               f"`{clash}` already on this host: set pod_cidr in the node config (and the "
                               "snapshotter's --pod-cidr) to a free private range, or delete that link if it is stale")
        await _ip(f"addr replace {addr} dev {net.bridge}")
    await _ip(f"link set {net.bridge} up")


def overlapping_route(net: PodNetwork, routes: str) -> str:
    """The first line of `ip -4 -o route show` output whose destination overlaps the node's pod
    subnet on another device than its bridge; "" when there is none."""
    for line in routes.splitlines():
        parts = line.split()
        if not parts or parts[0] == "default" or "dev" not in parts:
            continue
        dev = parts[parts.index("dev") + 1] if parts.index("dev") + 1 < len(parts) else ""
        try:
            dest = ipaddress.IPv4Network(parts[0], strict=False)
        except ValueError:
            continue
        if dev != net.bridge and dest.overlaps(net.subnet):
            return line.strip()
    return ""


async def remove_bridge_if_unused(net: PodNetwork, wait_s: float = 3.0) -> bool:
    """Delete the node's bridge when no pod is on it any more (the node is shutting down with
    its workers stopped); a bridge still holding ports stays for the workers it serves. The
    kernel takes a stopped worker's veth away a moment after its namespace, hence the wait."""
    ports = Path(f"/sys/class/net/{net.bridge}/brif")
    deadline = asyncio.get_running_loop().time() + wait_s
    while ports.is_dir() and any(ports.iterdir()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    if not ports.is_dir() or any(ports.iterdir()):
        return False
    await _ip(f"link del {net.bridge}")
    return True


async def attach(net: PodNetwork, pid: int) -> str:
    """Give the network namespace of `pid` a veth on the node's bridge and the address of the
    first free slot; returns it. Makes the node's bridge first when it is missing (the agent
    takes it down when it stops)."""
    if not Path(f"/sys/class/net/{net.bridge}").exists():
        await ensure_bridge(net)
    for slot in net.slots():
        host = net.host_end(slot)
        try:
            await _ip(f"link add {host} type veth peer name {INSIDE} netns {pid}")
        except NetworkError:
            if Path(f"/sys/class/net/{host}").exists():
                continue  # slot taken: try the next
            raise
        ip = net.address(slot)
        # The address may have been another pod's a moment ago: drop any neighbour entry the
        # node kept for it, so the first packets go to this pod's MAC, not to the old one.
        await _ip(f"link set {host} master {net.bridge}", f"link set dev {host} type bridge_slave isolated on",
                  f"link set {host} up", f"neigh flush to {ip} dev {net.bridge}")
        # eth0 up comes last: its route is the sandbox's signal that the network is ready.
        await _ip("link set lo up", f"addr add {ip}/{net.subnet.prefixlen} dev {INSIDE}", f"link set {INSIDE} up",
                  netns_pid=pid)
        return str(ip)
    raise NetworkError(f"no free address on {net.subnet}: every slot of the node's pod subnet is taken")


async def park(net: PodNetwork, pid: int) -> str:
    """Move the inner end of `pid`'s veth out of its namespace into this process's, renamed so it
    cannot clash with the node's own links; returns the address it had, "" when it had none
    (nothing to park). The host end stays on the bridge, holding the slot."""
    address = address_of(pid)
    if not address:
        return ""
    parked = net.parked_end(net.slot_of(address))
    await _ip(f"link set {INSIDE} down", f"link set {INSIDE} name {parked}", f"link set {parked} netns {os.getpid()}",
              netns_pid=pid)
    return address


async def unpark(net: PodNetwork, pid: int, address: str) -> None:
    """Put the parked inner end back into `pid`'s namespace with its address (`park` undone)."""
    slot = net.slot_of(address)
    parked = net.parked_end(slot)
    await _ip(f"link set {parked} netns {pid}")
    await _ip(f"link set {parked} name {INSIDE}", f"addr add {net.address(slot)}/{net.subnet.prefixlen} dev {INSIDE}",
              f"link set {INSIDE} up", netns_pid=pid)


async def remove_parked(net: PodNetwork) -> int:
    """Delete the veth pairs parked by a snapshotter that died mid-dump (their workers lost
    their network and were failed by their agent's probes); returns how many went."""
    stray = [link.name for link in Path("/sys/class/net").glob(f"tp{net.tag}*")]
    for name in stray:
        try:
            await _ip(f"link del {name}")
        except NetworkError:
            continue  # gone meanwhile
    return len(stray)


def address_of(pid: int) -> str:
    """The IPv4 address of `pid`'s network namespace other than loopback, "" if none. Read
    from /proc/<pid>/net, which shows that process's namespace: no tool to spawn."""
    try:
        lines = Path(f"/proc/{pid}/net/fib_trie").read_text().splitlines()
    except OSError:
        return ""
    for before, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL":
            addr = before.split()[-1]
            if not addr.startswith("127."):
                return addr
    return ""


def available() -> bool:
    """Whether this process may build pod networks: root with the ip and nsenter tools."""
    return os.geteuid() == 0 and all(any(Path(d, tool).exists() for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"))
                                     for tool in ("ip", "nsenter"))


def remove_node_network(node: str) -> None:
    """Delete what is left of a dead node's pod network once its processes are gone: pairs its
    snapshotter left parked, veths of workers that outlived its agent, the bridge. An agent
    removes its bridge when it stops cleanly; one killed (a node lost) leaves it behind."""
    net = PodNetwork.for_node(node)
    links = Path("/sys/class/net")
    ports = [p.name for p in (links / net.bridge / "brif").glob("*")]
    for name in [p.name for p in links.glob(f"tp{net.tag}*")] + ports + [net.bridge]:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
