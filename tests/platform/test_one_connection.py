"""Each service holds one connection to nats-server: its durable consumers (faststream) and its
requests, core subscriptions and JetStream publishes share it (thaw_core.subscriber.connect).
Counted by the server itself: its monitoring endpoint /connz lists connections by name.

The snapshotter test needs root and CRIU 4.x (`sudo infra/install-criu.sh`) and FAILS without
them, as the other snapshot tests do.
"""

import asyncio
import json
import logging
import os
import urllib.request
from collections import Counter

import nats
import pytest

from bus_schemas import permissions, streams
from bus_schemas.streams import ConsumerSpec
from thaw_core import servers, subscriber
from thaw_core.ports import free_port

from tests.conftest import eventually
from tests.platform.conftest import _healthy
from tests.platform.harness import Harness

OBSERVER = "one-connection-test"


@pytest.fixture
def monitored(tmp_path, redis_url):
    """The harness's platform on a nats-server that also serves its HTTP monitoring port."""
    port, monitor = free_port(), free_port()
    server = servers.start_nats(tmp_path / "nats", port=port, config_args=[
        "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "nats"), "-m", str(monitor)])
    h = Harness(tmp_path, server, redis_url)
    try:
        yield h, monitor
    finally:
        h.stop()


def connection_names(monitor_port: int) -> Counter[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/connz?limit=1024", timeout=2) as resp:
        return Counter(c.get("name", "") for c in json.loads(resp.read())["connections"])


async def consuming(js, spec: ConsumerSpec) -> bool:
    """The consumer's subscriber is pulling, so its service has made every connection it makes:
    the durable consumers start last."""
    try:
        return (await js.consumer_info(spec.stream, spec.durable)).num_waiting > 0
    except nats.js.errors.NotFoundError:
        return False


async def connections_once_running(h: Harness, monitor: int, names: tuple[str, ...],
                                   consumers: list[ConsumerSpec]) -> Counter[str]:
    """Start `names`, wait until each of `consumers` is pulling and the gateway's stream
    responder is connected, and count the platform's connections by name."""
    nc = await nats.connect(h.nats.url, name=OBSERVER)
    try:
        for name in names:
            h.start(name)
        await eventually(lambda: _healthy(h.url), 30, what="gateway /healthz")
        for spec in consumers:
            await eventually(lambda: consuming(nc.jetstream(), spec), 30, what=f"consumer {spec.durable} pulling")
        # the infer.stream.* responder connects after the gateway's HTTP server is up
        await eventually(lambda: connection_names(monitor)[permissions.GATEWAY_STREAM], 30,
                         what="the gateway-stream connection")
        return connection_names(monitor) - Counter({OBSERVER: 1})
    finally:
        await nc.close()


async def test_placement_agent_and_gateway_each_hold_one_nats_connection(monitored):
    h, monitor = monitored
    counts = await connections_once_running(
        h, monitor, ("placement", "agent", "gateway"),
        [streams.PLACEMENT_CAPACITY, streams.PLACEMENT_LEASES, streams.agent_placements(h.node)])
    # gateway-stream is a bus user of its own (only it may send many answers to one request)
    assert counts == Counter({"placement": 1, f"agent-{h.node}": 1, "gateway": 1, permissions.GATEWAY_STREAM: 1})


@pytest.mark.criu
async def test_the_snapshotter_holds_one_nats_connection(monitored):
    if os.geteuid() != 0:
        pytest.fail("the snapshotter needs root: run `sudo infra/install-criu.sh` and run the tests as root")
    h, monitor = monitored
    counts = await connections_once_running(
        h, monitor, ("placement", "agent", "gateway", "snapshotter"),
        [streams.agent_placements(h.node), streams.snapshotter_requests(h.node)])
    assert counts[f"snapshotter-{h.node}"] == 1, counts


async def test_the_one_connection_reconnects_and_logs_it_under_the_service_name(tmp_path, caplog):
    """What `thaw_core.bus.connect` promised is kept: reconnect forever, and say so in the log."""
    caplog.set_level(logging.INFO, logger="thaw_core.bus")
    server = servers.start_nats(tmp_path / "nats")
    broker, nc = await subscriber.connect(server.url, "placement-x")
    try:
        server.stop()
        await eventually(lambda: not nc.is_connected, 10, what="the connection to notice the server is gone")
        server = servers.start_nats(tmp_path / "nats", port=server.port)
        await eventually(lambda: nc.is_connected, 20, what="a reconnect")
        await nc.jetstream().account_info()  # the same client serves JetStream calls again
        said = [r.getMessage() for r in caplog.records if r.name == "thaw_core.bus"]
        assert "placement-x: disconnected from NATS, reconnecting" in said
        assert "placement-x: reconnected to NATS" in said
    finally:
        try:
            await subscriber.close(broker, nc)
        finally:
            server.kill()


async def test_the_one_connection_reconnects_after_the_server_refused_it_for_a_while(tmp_path):
    """A server that comes back without this user (its config not reloaded yet) and later with
    it: the service gets back on without a restart, as a plain `bus.connect` client does."""
    port = free_port()

    def serve(password: str) -> servers.Server:
        return servers.start_nats(tmp_path / "nats", port=port, config_args=[
            "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "nats"),
            "--user", "placement", "--pass", password])

    server = serve("right")
    broker, nc = await subscriber.connect(f"nats://placement:right@127.0.0.1:{port}", "placement")
    try:
        server.stop()
        server = serve("other")
        await asyncio.sleep(1.5)  # a few reconnects refused
        server.stop()
        server = serve("right")
        await eventually(lambda: nc.is_connected, 20, what="a reconnect once the login is accepted again")
    finally:
        try:
            await subscriber.close(broker, nc)
        finally:
            server.kill()
