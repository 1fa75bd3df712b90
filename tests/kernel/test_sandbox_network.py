"""Pod networks on a real kernel (thaw_core/sandbox/network.py): each pod its own address on
the node's bridge, an address given again answers at once, pods cannot reach each other, and a
node that stops takes its bridge with it. Needs root (as a node agent does)."""

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from thaw_core.sandbox import network

from tests.platform.harness import free_node_id

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not network.available(), reason="needs root and iproute2")
SERVER = "import http.server as h; h.HTTPServer(('0.0.0.0', 8080), h.SimpleHTTPRequestHandler).serve_forever()"


def pod_process() -> subprocess.Popen:
    """A process in a network namespace of its own serving HTTP on 0.0.0.0:8080 (returned once
    it is in that namespace)."""
    proc = subprocess.Popen(["unshare", "--net", sys.executable, "-c", SERVER], cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours = os.readlink("/proc/self/ns/net")
    while os.readlink(f"/proc/{proc.pid}/ns/net") == ours:
        time.sleep(0.005)
    return proc


def answers(address: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}:8080/", timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


async def in_netns(pid: int, *argv: str) -> int:
    return (await asyncio.to_thread(subprocess.run, ["nsenter", "-t", str(pid), "-n", *argv],
                                    capture_output=True, timeout=10)).returncode


@pytest.fixture
def net():
    n = network.PodNetwork.for_node(free_node_id("test-net"))
    yield n
    subprocess.run(["ip", "link", "del", n.bridge], capture_output=True)


async def test_pods_get_addresses_of_their_own_and_cannot_reach_each_other(net):
    a, b = pod_process(), pod_process()
    try:
        addr_a, addr_b = await network.attach(net, a.pid), await network.attach(net, b.pid)
        assert addr_a != addr_b and network.address_of(a.pid) == addr_a
        assert answers(addr_a) and answers(addr_b)
        reach = "import socket,sys; socket.create_connection((sys.argv[1], 8080), timeout=1)"
        assert await in_netns(a.pid, sys.executable, "-c", reach, addr_b) != 0, "isolated bridge ports"
        assert await in_netns(a.pid, sys.executable, "-c", reach, str(net.gateway)) != 0, "nothing listens there"
    finally:
        for p in (a, b):
            p.kill()
            p.wait()


async def test_an_address_given_again_answers_at_once_and_the_idle_bridge_goes(net):
    first = pod_process()
    address = await network.attach(net, first.pid)
    assert answers(address)
    first.kill()
    first.wait()
    while Path(f"/sys/class/net/{net.host_end(net.slot_of(address))}").exists():
        await asyncio.sleep(0.05)  # the kernel takes the veth away with the namespace
    second = pod_process()
    try:
        assert await network.attach(net, second.pid) == address, "the freed slot is the first free one"
        assert answers(address, timeout_s=2.0)
        assert not await network.remove_bridge_if_unused(net, wait_s=0.2), "a bridge in use stays"
    finally:
        second.kill()
        second.wait()
    assert await network.remove_bridge_if_unused(net)
    assert not Path(f"/sys/class/net/{net.bridge}").exists()


async def test_a_parked_worker_keeps_its_address_while_another_pod_attaches_and_answers_there_again(net):
    # A dump parks the worker's inner veth end outside its namespace (CRIU cannot dump a veth);
    # a pod attached meanwhile must not take the parked worker's address.
    worker, other = pod_process(), pod_process()
    try:
        address = await network.attach(net, worker.pid)
        assert await network.park(net, worker.pid) == address
        assert network.address_of(worker.pid) == "", "nothing but loopback left to dump"
        assert await network.attach(net, other.pid) != address, "the slot stayed held"
        await network.unpark(net, worker.pid, address)
        assert network.address_of(worker.pid) == address
        assert answers(address, timeout_s=2.0)
    finally:
        for p in (worker, other):
            p.kill()
            p.wait()


async def test_pairs_parked_by_a_snapshotter_that_died_are_removed_and_free_their_slot(net):
    worker = pod_process()
    try:
        address = await network.attach(net, worker.pid)
        await network.park(net, worker.pid)
    finally:
        worker.kill()
        worker.wait()
    host = Path(f"/sys/class/net/{net.host_end(net.slot_of(address))}")
    await asyncio.sleep(0.3)
    assert host.exists(), "a parked pair outlives its worker: the slot would leak"
    assert await network.remove_parked(net) == 1
    assert not host.exists() and not Path(f"/sys/class/net/{net.parked_end(net.slot_of(address))}").exists()


async def test_a_pod_subnet_another_link_routes_is_refused_with_what_to_do(net):
    other = f"thwt{os.urandom(3).hex()}"
    subprocess.run(["ip", "link", "add", other, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{net.address(9)}/28", "dev", other], check=True)
        subprocess.run(["ip", "link", "set", other, "up"], check=True)
        with pytest.raises(network.NetworkError) as refused:
            await network.ensure_bridge(net)
        assert f"dev {other}" in str(refused.value) and "pod_cidr" in str(refused.value)
        addresses = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", net.bridge], capture_output=True,
                                   text=True).stdout
        assert addresses == "", "the bridge got no address: packets would have gone two ways"
    finally:
        subprocess.run(["ip", "link", "del", other], capture_output=True)


async def test_a_node_whose_derived_subnet_another_link_routes_takes_its_next_and_both_its_services_agree():
    node = free_node_id("test-net")
    first = network.PodNetwork.for_node(node)
    other = f"thwt{os.urandom(3).hex()}"
    subprocess.run(["ip", "link", "add", other, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{first.gateway}/{first.subnet.prefixlen}", "dev", other], check=True)
        subprocess.run(["ip", "link", "set", other, "up"], check=True)
        chosen = network.current(node)  # what the agent computes before its first pod
        assert chosen.bridge == first.bridge and not chosen.subnet.overlaps(first.subnet)
        await network.ensure_bridge(chosen)
        assert network.current(node) == chosen, "once the bridge exists, its subnet is the node's (the snapshotter's too)"
        assert network.bridge_subnet(chosen.bridge) == chosen.subnet
    finally:
        for link in (other, first.bridge):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
