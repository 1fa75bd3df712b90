"""The authenticated bus (DESIGN.md section 8): each role can do on the bus what its service
does, and nats-server itself refuses everything else.

One nats-server for the module, run from the config `thaw_core.bus_auth` renders for a
platform with nodes `a` and `b`, its streams provisioned with the operator's credentials. A
refusal is proven twice: the offender's connection hears NATS's "permissions violation", and
nothing gets through (an operator listening to every subject hears no refused publish; a refused
subscription receives nothing).
"""

import asyncio
import contextlib
import json
import shutil
import ssl
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig

from bus_schemas import permissions as P
from bus_schemas import streams, subjects
from bus_schemas.pods import PlacementMessage, PodStop
from thaw_core import bus, bus_auth
from thaw_core.bus_auth import Credentials, TlsFiles
from thaw_core.ports import free_port
from thaw_core.servers import nats_server_binary, wait_for_port
from thaw_core.subscriber import subscribe
from tests.conftest import server_caught_up

NODES = ("a", "b")


@dataclass
class Bus:
    url: str
    secrets_dir: Path
    store_dir: Path
    listen: str
    process: subprocess.Popen
    creds: dict[str, Credentials]


def start_server(config: Path, port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen([nats_server_binary(), *bus_auth.server_args(config)], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_for_port(port, process, 15, "nats-server")
    return process


def all_users(nodes=NODES) -> list[str]:
    return [u.name for u in P.platform_users(nodes)]


@contextlib.contextmanager
def own_server(folder: Path, tls: TlsFiles | None = None):
    """A nats-server from the config bus_auth writes for a platform with NODES; streams not
    provisioned."""
    port = free_port()
    listen = f"127.0.0.1:{port}"
    config = bus_auth.write_platform_config(folder / "secrets", NODES, listen=listen, store_dir=folder / "js",
                                            tls=tls)
    process = start_server(config, port, folder / "nats-server.log")
    try:
        yield Bus(f"nats://{listen}", folder / "secrets", folder / "js", listen, process,
                  bus_auth.ensure_credentials(folder / "secrets", all_users()))
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def platform_bus(tmp_path_factory):
    with own_server(tmp_path_factory.mktemp("bus-auth")) as server:
        asyncio.run(bus_auth.provision_streams(server.url, server.creds[P.OPERATOR]))
        yield server


@dataclass
class Session:
    """One user's connection, with every error NATS reported to it."""

    nc: Client
    errors: list[str] = field(default_factory=list)

    @property
    def js(self):
        return self.nc.jetstream()

    async def was_refused(self, action: str, subject: str, timeout_s: float = 2.0) -> bool:
        """NATS's own verdict. It arrives asynchronously, now and then after the PONG of a
        flush sent behind the offence, so it is awaited."""
        expected = f'permissions violation for {action} to "{subject.lower()}"'
        await self.nc.flush(timeout=2)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not any(expected in error for error in self.errors):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


class Heard:
    """Every subject an operator subscribed to `>` hears."""

    def __init__(self, session: Session):
        self.session, self.subjects = session, []

    async def on_msg(self, msg) -> None:
        self.subjects.append(msg.subject)

    async def after(self, *sessions: Session) -> list[str]:
        """What was heard once the server processed everything `sessions` sent."""
        for s in sessions:
            await s.nc.flush(timeout=2)
        await self.session.nc.flush(timeout=2)
        return self.subjects


@pytest.fixture
async def login(platform_bus):
    sessions = []

    async def as_user(user: str) -> Session:
        session = Session(nc=None)

        async def on_error(exc):
            session.errors.append(str(exc).lower())

        session.nc = await nats.connect(platform_bus.url, name=user, allow_reconnect=False, error_cb=on_error,
                                        **platform_bus.creds[user].connect_options())
        sessions.append(session)
        return session

    yield as_user
    for s in sessions:
        await s.nc.close()


@pytest.fixture
async def heard(login) -> Heard:
    operator = await login(P.OPERATOR)
    listener = Heard(operator)
    await operator.nc.subscribe(">", cb=listener.on_msg)
    await server_caught_up(operator.nc)
    return listener


# ---------------------------------------------------------------- what each role may do

JS_PUBLISHES = [
    (P.GATEWAY, subjects.lease_requested("echo"), streams.LEASES),
    (P.GATEWAY, subjects.fn_deployed("echo"), streams.FUNCTIONS),
    (P.GATEWAY, subjects.fn_deleted("echo"), streams.FUNCTIONS),
    (P.PLACEMENT, subjects.place_assigned("a"), streams.PLACEMENT),
    (P.PLACEMENT, subjects.place_stop("b"), streams.PLACEMENT),
    (P.PLACEMENT, subjects.pod_state("echo-1"), streams.PODS),
    (P.GATEWAY, subjects.pod_state("echo-1"), streams.PODS),  # busy/idle, made by its leases
    ("agent-a", subjects.node_capacity("a"), streams.NODES),
    ("agent-a", subjects.pod_state("echo-1"), streams.PODS),
    ("agent-a", subjects.snapshot_requested("echo"), streams.SNAPSHOTS),
    ("snapshotter-a", subjects.snapshot_ready("echo"), streams.SNAPSHOTS),
    (P.CLIENT, subjects.INFER_ASYNC.format(fn="echo"), streams.INFER_ASYNC),
    (P.GATEWAY, subjects.infer_async_accepted("echo"), streams.INFER_ASYNC),
    (P.GATEWAY, subjects.infer_result("c1"), streams.INFER_RESULTS),
    (P.GATEWAY, subjects.infer_dlq("echo"), streams.INFER_DLQ),
]


@pytest.mark.parametrize("user,subject,stream", JS_PUBLISHES)
async def test_each_role_publishes_its_events_to_jetstream(login, user, subject, stream):
    session = await login(user)
    ack = await session.js.publish(subject, b"{}", headers={"Nats-Msg-Id": f"{user}:{subject}"}, timeout=2)
    assert ack.stream == stream.name
    assert session.errors == []


CONSUMERS = [
    # (consumer, its user, who publishes to it, a subject it receives)
    (streams.PLACEMENT_LEASES, P.PLACEMENT, P.GATEWAY, subjects.lease_requested("echo")),
    (streams.PLACEMENT_CAPACITY, P.PLACEMENT, "agent-b", subjects.node_capacity("b")),
    # a second placement worker's own durable: every worker hears every node
    (streams.placement_capacity("placement-2"), P.PLACEMENT, "agent-b", subjects.node_capacity("b")),
    (streams.agent_placements("a"), "agent-a", P.PLACEMENT, subjects.place_assigned("a")),
    (streams.snapshotter_requests("a"), "snapshotter-a", "agent-a", subjects.snapshot_requested("echo")),
    (streams.GATEWAY_ASYNC, P.GATEWAY, P.CLIENT, subjects.infer_async("echo")),
]


@pytest.mark.parametrize("spec,user,publisher,subject", CONSUMERS, ids=lambda v: getattr(v, "durable", None))
async def test_each_role_creates_pulls_and_acks_its_own_durable_consumer(login, spec, user, publisher, subject):
    """As nats-py's pull_subscribe does it for faststream: INFO, CREATE with the filter in the
    subject, MSG.NEXT to the user's inbox, acks to $JS.ACK.<stream>.<durable>."""
    session, sender = await login(user), await login(publisher)
    sub = await session.js.pull_subscribe(spec.filter_subject, durable=spec.durable, stream=spec.stream,
                                          config=ConsumerConfig(ack_wait=spec.ack_wait_s))
    await sender.js.publish(subject, b"mine", timeout=2)
    received = []
    while b"mine" not in received:
        for msg in await sub.fetch(16, timeout=2):
            received.append(msg.data)
            await msg.ack_sync(timeout=2)  # answered by JetStream: the ack went through
    info = await session.js.consumer_info(spec.stream, spec.durable)
    assert info.num_ack_pending == 0
    assert session.errors == [] and sender.errors == []


async def test_the_faststream_subscriber_consumes_with_credentials(platform_bus, login):
    """The real subscriber shape (thaw_core.subscriber.subscribe) on a broker made with the
    credentials' broker_options; the one argument it must add is the pull inbox prefix."""
    from faststream.nats import NatsBroker

    creds = platform_bus.creds["agent-b"]
    broker = NatsBroker(platform_bus.url, name="agent-b", max_reconnect_attempts=-1, reconnect_time_wait=0.25,
                        **creds.broker_options())
    original = broker.subscriber
    broker.subscriber = lambda *a, **k: original(*a, inbox_prefix=creds.subscriber_inbox_prefix, **k)
    handled = asyncio.Queue()

    async def on_placement(msg: PlacementMessage, subject: str) -> None:
        await handled.put((msg, subject))

    subscribe(broker, streams.agent_placements("b"), PlacementMessage, on_placement)
    await broker.start()
    try:
        placement = await login(P.PLACEMENT)
        stop = PodStop(pod="echo-1", node="b", reason="test")
        await bus.publish(placement.js, subjects.place_stop("b"), stop, msg_id="stop:echo-1")
        assert await asyncio.wait_for(handled.get(), 5) == (stop, subjects.place_stop("b"))
    finally:
        await broker.stop()


async def test_placement_s_lease_consumer_consumes_with_its_credentials(platform_bus, login):
    """thaw_core.subscriber.PullConsumer (no faststream) as the placement user: it makes the
    shared lease durable, fetches from it on the user's inbox and acks."""
    from bus_schemas.leases import LeaseRequested
    from thaw_core.subscriber import PullConsumer

    placement = await login(P.PLACEMENT)
    handled = asyncio.Queue()

    async def on_lease(msg: LeaseRequested, subject: str) -> None:
        await handled.put(msg.fn)

    consumer = PullConsumer(placement.js, streams.PLACEMENT_LEASES, LeaseRequested, on_lease,
                            platform_bus.creds[P.PLACEMENT])
    await consumer.start()
    try:
        gateway = await login(P.GATEWAY)
        ask = LeaseRequested(fn="echo", want_pods=1, gateway="gw", at_ms=1)
        await bus.publish(gateway.js, subjects.lease_requested("echo"), ask, msg_id="lease:auth")
        assert await asyncio.wait_for(handled.get(), 5) == "echo"
    finally:
        await consumer.stop()
    assert placement.errors == [] and gateway.errors == []


async def test_the_gateway_keeps_reads_lists_and_redrives_async_calls_with_its_rights(login):
    """gateway/call_store.py as the gateway user: a state stored and read back by subject, listed
    through a consumer of its own (then deleted), a dead letter listed and deleted."""
    from bus_schemas.calls import AsyncCall, CallRecord, DeadCall
    from gateway.call_store import CallStore

    gateway = await login(P.GATEWAY)
    store = CallStore(gateway.js)
    record = CallRecord(call_id="cauth1", fn="echo", tenant="t", status="succeeded", updated_ms=1)
    await store.put(record, b"answer")
    assert await store.get("cauth1") == (record, b"answer")
    assert [r.call_id for r in await store.recent("t")] == ["cauth1"]
    call = AsyncCall(call_id="cauth2", fn="echo", tenant="t")
    await store.bury(call, b"body", DeadCall(call_id="cauth2", fn="echo", tenant="t", attempts=3, http_status=500,
                                             reason="HTTP 500", died_ms=1))
    [letter] = await store.dead("t", "echo")
    assert (letter.call, letter.body) == (call, b"body")
    await store.forget_dead(letter)
    assert await store.dead("t") == []
    assert gateway.errors == []
    operator = await login(P.OPERATOR)
    for stream in (streams.INFER_RESULTS, streams.INFER_DLQ):
        assert await operator.js.consumers_info(stream.name) == [], "listing consumers are deleted after use"


async def test_core_traffic_of_each_role_flows(login):
    """Heartbeats reach placement; a client's request reaches the gateway (queue group
    `gateway`) and its answer comes back; an agent's restore and ping reach its snapshotter; the
    gateway's read of a node's logs reaches that node's agent."""
    gateway, placement, client = await login(P.GATEWAY), await login(P.PLACEMENT), await login(P.CLIENT)
    agent, snapshotter = await login("agent-a"), await login("snapshotter-a")
    heartbeats = await placement.nc.subscribe(P.every(subjects.NODE_HEARTBEAT))

    async def answer(msg):
        await msg.respond(b"answer to " + msg.data)

    await gateway.nc.subscribe(P.every(subjects.INFER_REQUEST), queue=subjects.GATEWAY_QUEUE_GROUP, cb=answer)
    await gateway.nc.subscribe(P.every(subjects.POD_STATE))
    await gateway.nc.subscribe(streams.FUNCTIONS.subjects[0])
    for subject in (subjects.snapshot_restore("a"), subjects.snapshot_ping("a")):
        await snapshotter.nc.subscribe(subject, queue="snapshotter", cb=answer)
    await agent.nc.subscribe(subjects.logs_read("a"), cb=answer)
    await server_caught_up(gateway.nc)
    await server_caught_up(snapshotter.nc)
    await server_caught_up(agent.nc)

    await agent.nc.publish(subjects.node_heartbeat("a"), b"beat")
    assert (await heartbeats.next_msg(timeout=2)).data == b"beat"
    reply = await client.nc.request(subjects.infer_request("echo"), b"hi", timeout=2)
    assert reply.data == b"answer to hi"
    for subject in (subjects.snapshot_restore("a"), subjects.snapshot_ping("a")):
        assert (await agent.nc.request(subject, b"x", timeout=2)).data == b"answer to x"
    assert (await gateway.nc.request(subjects.logs_read("a"), b"y", timeout=2)).data == b"answer to y"
    assert all(s.errors == [] for s in (gateway, placement, client, agent, snapshotter))


@pytest.mark.parametrize("user", [P.GATEWAY, P.PLACEMENT, "agent-a", "snapshotter-b"])
async def test_services_can_check_that_streams_are_provisioned(login, user):
    session = await login(user)
    await bus_auth.require_streams(session.js)
    assert session.errors == []


async def test_a_service_on_an_unprovisioned_bus_is_told_to_provision_it(tmp_path):
    with own_server(tmp_path) as server:
        nc = await bus.connect(server.url, "gateway", server.creds[P.GATEWAY])
        try:
            with pytest.raises(bus_auth.StreamsMissing) as missing:
                await bus_auth.require_streams(nc.jetstream())
        finally:
            await nc.close()
    assert missing.value.names == [spec.name for spec in streams.ALL_STREAMS]


async def test_bus_connect_logs_in_with_credentials(platform_bus):
    nc = await bus.connect(platform_bus.url, "agent-a", platform_bus.creds["agent-a"])
    try:
        ack = await nc.jetstream().publish(subjects.node_capacity("a"), b"{}", timeout=2)
        assert ack.stream == streams.NODES.name
    finally:
        await nc.close()


async def test_the_operator_may_do_everything(login):
    operator = await login(P.OPERATOR)
    await operator.js.add_stream(name="SCRATCH", subjects=["scratch.>"])
    await operator.js.publish("scratch.x", b"1", timeout=2)
    assert (await operator.js.get_last_msg("SCRATCH", "scratch.x")).data == b"1"
    assert await operator.js.delete_stream("SCRATCH")
    assert operator.errors == []


# ---------------------------------------------------------------- what NATS refuses

FORGED_PUBLISHES = [
    # an agent speaks for its own node only, and places nothing
    ("agent-a", subjects.place_assigned("a")),
    ("agent-a", subjects.place_stop("b")),
    ("agent-a", subjects.node_capacity("b")),
    ("agent-a", subjects.node_heartbeat("b")),
    ("agent-a", subjects.lease_requested("echo")),
    ("agent-a", subjects.fn_deployed("x")),
    ("agent-a", subjects.snapshot_ready("echo")),
    ("agent-a", subjects.snapshot_restore("b")),
    ("agent-a", subjects.infer_request("echo")),
    # ... and cannot reach another node's placements through the JetStream API
    ("agent-a", "$JS.API.CONSUMER.CREATE.PLACEMENT.agent-b.place.*.b"),
    ("agent-a", "$JS.API.CONSUMER.CREATE.PLACEMENT.agent-a.place.*.b"),
    ("agent-a", "$JS.API.CONSUMER.CREATE.PLACEMENT.spy.place.>"),
    ("agent-a", "$JS.API.CONSUMER.DURABLE.CREATE.PLACEMENT.agent-a"),  # names no filter
    ("agent-a", "$JS.API.CONSUMER.CREATE.PLACEMENT"),  # ephemeral
    ("agent-a", "$JS.API.CONSUMER.INFO.PLACEMENT.agent-b"),
    ("agent-a", "$JS.API.CONSUMER.MSG.NEXT.PLACEMENT.agent-b"),
    ("agent-a", "$JS.ACK.PLACEMENT.agent-b.1.1.1.1.0"),
    ("agent-a", "$JS.API.CONSUMER.DELETE.PLACEMENT.agent-b"),
    ("agent-a", "$JS.API.STREAM.MSG.GET.PLACEMENT"),
    ("agent-a", "$JS.API.DIRECT.GET.PLACEMENT"),
    ("agent-a", "$JS.API.DIRECT.GET.PLACEMENT.place.assigned.b"),
    ("agent-a", "$JS.API.STREAM.CREATE.EVIL"),
    ("agent-a", "$JS.API.STREAM.UPDATE.PLACEMENT"),
    ("agent-a", "$JS.API.STREAM.PURGE.PLACEMENT"),
    ("agent-a", "$JS.API.STREAM.DELETE.PLACEMENT"),
    ("agent-a", "_INBOX_agent-b.forged.1"),  # a forged answer to another agent's request
    # a snapshotter announces snapshots and answers its node's requests, nothing else
    ("snapshotter-a", subjects.place_assigned("a")),
    ("snapshotter-a", subjects.node_capacity("a")),
    ("snapshotter-a", subjects.pod_state("echo-1")),
    ("snapshotter-a", subjects.snapshot_restore("b")),
    ("snapshotter-a", "$JS.API.CONSUMER.CREATE.PLACEMENT.snapshotter-a.place.*.a"),
    # placement places; it does not ask for workers, report capacity or announce functions
    (P.PLACEMENT, subjects.lease_requested("echo")),
    (P.PLACEMENT, subjects.node_capacity("a")),
    (P.PLACEMENT, subjects.fn_deployed("x")),
    (P.PLACEMENT, "$JS.API.STREAM.CREATE.EVIL"),
    # the gateway asks for workers; it does not place them, nor answer what nobody asked it
    (P.GATEWAY, subjects.place_assigned("a")),
    (P.GATEWAY, subjects.place_stop("a")),
    (P.GATEWAY, subjects.node_capacity("a")),
    (P.GATEWAY, "_INBOX_client.forged.1"),
    # a client invokes, nothing else
    (P.CLIENT, subjects.lease_requested("echo")),
    (P.CLIENT, subjects.place_assigned("a")),
    (P.CLIENT, subjects.fn_deployed("x")),
    (P.CLIENT, subjects.pod_state("echo-1")),
    (P.CLIENT, subjects.node_heartbeat("a")),
    (P.CLIENT, subjects.snapshot_restore("a")),
    (P.CLIENT, subjects.logs_read("a")),  # logs are read through the gateway, which checks the owner
    ("snapshotter-a", subjects.logs_read("a")),
    (P.CLIENT, "$JS.API.STREAM.INFO.FUNCTIONS"),
    (P.CLIENT, "$JS.API.STREAM.MSG.GET.FUNCTIONS"),
    (P.CLIENT, "$JS.API.CONSUMER.CREATE.INFER_ASYNC"),
    (P.CLIENT, "_INBOX_agent-a.forged.1"),
    # ... and may not pass its call off as one the gateway accepted, nor write states or dead letters
    (P.CLIENT, subjects.infer_async_accepted("echo")),
    (P.CLIENT, subjects.infer_result("c1")),
    (P.CLIENT, subjects.infer_dlq("echo")),
    (P.CLIENT, "$JS.API.STREAM.MSG.GET.INFER_RESULTS"),
    ("agent-a", subjects.infer_result("c1")),
    ("agent-a", subjects.infer_async_accepted("echo")),
    # the gateway reads states and dead letters, deletes redriven dead letters, nothing more
    (P.GATEWAY, "$JS.API.STREAM.MSG.DELETE.INFER_RESULTS"),
    (P.GATEWAY, "$JS.API.STREAM.MSG.GET.INFER_ASYNC"),
    (P.GATEWAY, "$JS.API.STREAM.PURGE.INFER_DLQ"),
    (P.GATEWAY, "$JS.API.CONSUMER.CREATE.PODS.spy.pod.>"),
    (P.GATEWAY, "$JS.API.CONSUMER.CREATE.INFER_ASYNC.spy.infer.async.>"),
]


@pytest.mark.parametrize("user,subject", FORGED_PUBLISHES)
async def test_nats_refuses_a_publish_outside_the_role(login, heard, user, subject):
    offender = await login(user)
    await offender.nc.publish(subject, b"forged")
    assert await offender.was_refused("publish", subject)
    assert subject not in await heard.after(offender)


EAVESDROPPING = [
    # (user, subscription, queue group)
    ("agent-a", ">", ""),
    ("agent-a", subjects.place_assigned("b"), ""),
    ("agent-a", subjects.place_for_node("a"), ""),  # placements come only through its consumer
    ("agent-a", subjects.snapshot_restore("a"), ""),  # only the snapshotter answers restores
    ("agent-a", P.every(subjects.INFER_REQUEST), ""),
    ("agent-a", "_INBOX.>", ""),
    ("agent-a", "_INBOX_agent-b.>", ""),
    ("agent-a", "_INBOX_client.>", ""),
    ("agent-a", "$JS.>", ""),
    ("snapshotter-a", subjects.snapshot_restore("b"), ""),
    ("snapshotter-a", subjects.place_for_node("a"), ""),
    (P.PLACEMENT, P.every(subjects.INFER_REQUEST), ""),
    (P.PLACEMENT, "_INBOX_agent-a.>", ""),
    (P.GATEWAY, P.every(subjects.INFER_REQUEST), ""),  # outside its queue group it would steal requests
    (P.GATEWAY, P.every(subjects.INFER_REQUEST), "spy"),
    (P.GATEWAY, P.every(subjects.PLACE_ASSIGNED), ""),
    # a client reads its replies only: never others' requests (and their API keys)
    (P.CLIENT, ">", ""),
    (P.CLIENT, P.every(subjects.INFER_REQUEST), ""),
    (P.CLIENT, subjects.infer_request("echo"), ""),
    (P.CLIENT, subjects.infer_request("echo"), subjects.GATEWAY_QUEUE_GROUP),
    (P.CLIENT, "_INBOX.>", ""),
    (P.CLIENT, "_INBOX_gateway.>", ""),
    (P.CLIENT, P.every(subjects.POD_STATE), ""),
    # a node's agent answers reads of its own node's logs only
    ("agent-a", subjects.logs_read("b"), ""),
    ("agent-a", P.every(subjects.LOGS_READ), ""),
    (P.CLIENT, subjects.logs_read("a"), ""),
]


def example_of(pattern: str) -> str:
    """A subject the pattern matches."""
    return ".".join("x" if token in ("*", ">") else token for token in pattern.split("."))


@pytest.mark.parametrize("user,subject,queue", EAVESDROPPING)
async def test_nats_refuses_a_subscription_outside_the_role(login, user, subject, queue):
    spy, operator = await login(user), await login(P.OPERATOR)
    sub = await spy.nc.subscribe(subject, queue=queue)
    assert await spy.was_refused("subscription", subject)
    await operator.nc.publish(example_of(subject), b"secret", headers={"Authorization": "Bearer k"})
    await server_caught_up(operator.nc)
    await server_caught_up(spy.nc)
    assert sub.pending_msgs == 0


CONSUMER_TRICKS = [
    # its own create subject, another filter or name in the request: JetStream checks them
    ({"filter_subject": subjects.place_for_node("b")}, "did not match filtered subject"),
    ({"filter_subjects": [subjects.place_for_node("b")]}, "multiple subject filters"),
    ({"name": "agent-b", "durable_name": "agent-b"}, "does not match durable name"),
]


@pytest.mark.parametrize("change,error", CONSUMER_TRICKS, ids=["filter", "filters", "name"])
async def test_jetstream_refuses_an_agents_consumer_for_another_node(login, change, error):
    spec = streams.agent_placements("a")
    agent = await login("agent-a")
    config = {"name": spec.durable, "durable_name": spec.durable, "filter_subject": spec.filter_subject,
              "ack_policy": "explicit", "deliver_policy": "all"}
    if "filter_subjects" in change:
        del config["filter_subject"]
    request = {"stream_name": spec.stream, "config": {**config, **change}}
    reply = await agent.nc.request(P.consumer_create(spec), json.dumps(request).encode(), timeout=2)
    assert error in json.loads(reply.data)["error"]["description"]


@pytest.mark.parametrize("creds", [None, Credentials("agent-a", "wrong"), Credentials("nobody", "x")],
                         ids=["anonymous", "wrong-password", "unknown-user"])
async def test_nats_refuses_a_connection_without_valid_credentials(platform_bus, creds):
    options = creds.connect_options() if creds else {}
    with pytest.raises((nats.errors.Error, OSError)) as refused:
        await nats.connect(platform_bus.url, allow_reconnect=False, connect_timeout=2, **options)
    # The server answers "Authorization Violation" and hangs up; now and then the hang-up wins.
    assert isinstance(refused.value, OSError) or "authorization violation" in str(refused.value).lower()


# ---------------------------------------------------------------- credentials and config files

def test_credentials_are_private_random_and_kept(tmp_path):
    secrets_dir = tmp_path / "secrets"
    first = bus_auth.ensure_credentials(secrets_dir, all_users())
    again = bus_auth.ensure_credentials(secrets_dir, all_users())
    assert again == first, "a restarted platform keeps its credentials"
    assert len({c.password for c in first.values()}) == len(first)
    assert all(len(c.password) >= 43 for c in first.values())  # 32 random bytes, URL-safe
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for user in first:
        path = bus_auth.credentials_path(secrets_dir, user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text()).keys() == {"user", "password"}
        assert bus_auth.read_credentials(path, user) == first[user]
    assert "password" not in repr(first[P.GATEWAY]) and first[P.GATEWAY].password not in repr(first[P.GATEWAY])


def test_a_joining_node_gets_credentials_and_nobody_elses_change(tmp_path):
    before = bus_auth.ensure_credentials(tmp_path, all_users())
    after = bus_auth.ensure_credentials(tmp_path, all_users((*NODES, "c")))
    assert {u: after[u] for u in before} == before
    assert {"agent-c", "snapshotter-c"} <= after.keys()


def test_someone_elses_credentials_file_is_refused(tmp_path):
    creds = bus_auth.ensure_credentials(tmp_path, ["agent-a"])
    with pytest.raises(bus_auth.CredentialsError, match="not 'agent-b'"):
        bus_auth.read_credentials(bus_auth.credentials_path(tmp_path, "agent-a"), "agent-b")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(bus_auth.CredentialsError, match="not a NATS credentials file"):
        bus_auth.read_credentials(broken)
    assert creds["agent-a"].user == "agent-a"


def test_the_server_config_is_private_and_lists_every_user(tmp_path):
    config = bus_auth.write_platform_config(tmp_path / "secrets", NODES, listen="127.0.0.1:4222",
                                            store_dir=tmp_path / "js")
    assert config == tmp_path / "secrets" / bus_auth.CONFIG_FILE
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert "no_auth_user" not in text
    assert text.count('"user":') == len(all_users())
    check = subprocess.run([nats_server_binary(), *bus_auth.server_args(config), "-t"], capture_output=True)
    assert check.returncode == 0, check.stderr


def test_an_empty_allow_list_is_written_as_deny_all():
    block = bus_auth.permissions_block(P.Permissions(publish_allow=(), subscribe_allow=("x",)))
    assert block["publish"] == {"deny": [">"]}


@pytest.mark.parametrize("node", ["a.b", "*", ">", "A", "", "a b"])
def test_a_node_name_that_would_widen_a_pattern_is_refused(node):
    with pytest.raises(P.BadName):
        P.bus_user(P.AGENT, node)


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: '*' is one token, '>' one or more at the end."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or token not in ("*", got[i]):
            return False
    return len(want) == len(got)


STREAM_ADMIN = ("STREAM.CREATE", "STREAM.UPDATE", "STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.GET",
                "STREAM.MSG.DELETE", "DIRECT.GET")


@pytest.mark.parametrize("user", P.platform_users(NODES), ids=lambda u: u.name)
def test_only_the_operator_may_change_streams_or_read_them_by_the_api(user):
    api = [f"{P.JS_API}.{op}.{spec.name}" for op in STREAM_ADMIN for spec in streams.ALL_STREAMS]
    allowed = [s for s in api if any(matches(p, s) for p in user.permissions.publish_allow)]
    # the gateway reads async calls' states and dead letters, and deletes a redriven dead letter
    gateway = [f"{P.JS_API}.STREAM.MSG.GET.INFER_RESULTS", f"{P.JS_API}.STREAM.MSG.GET.INFER_DLQ",
               f"{P.JS_API}.STREAM.MSG.DELETE.INFER_DLQ"]
    assert sorted(allowed) == sorted(api if user.role == P.OPERATOR else gateway if user.role == P.GATEWAY else [])


# ---------------------------------------------------------------- a node joins; TLS

async def test_a_node_joins_by_rewriting_the_config_and_reloading(platform_bus, login):
    """New users apply on SIGHUP; connections already open stay."""
    gateway = await login(P.GATEWAY)
    bus_auth.write_platform_config(platform_bus.secrets_dir, (*NODES, "c"), listen=platform_bus.listen,
                                   store_dir=platform_bus.store_dir)
    creds = bus_auth.read_credentials(bus_auth.credentials_path(platform_bus.secrets_dir, "agent-c"), "agent-c")
    bus_auth.reload_config(platform_bus.process)
    nc = await connect_once_reloaded(platform_bus.url, creds)
    try:
        ack = await nc.jetstream().publish(subjects.node_capacity("c"), b"{}", timeout=2)
        assert ack.stream == streams.NODES.name
        assert (await gateway.js.publish(subjects.lease_requested("echo"), b"{}", timeout=2)).stream == "LEASES"
    finally:
        await nc.close()


async def connect_once_reloaded(url: str, creds: Credentials, timeout_s: float = 5) -> Client:
    """The server reloads in the background: a new user is refused until it has."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await nats.connect(url, allow_reconnect=False, **creds.connect_options())
        except (nats.errors.Error, OSError):  # refused: an error, or the socket closed under it
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


def make_certificates(folder: Path) -> tuple[Path, TlsFiles]:
    """A throwaway CA and a server certificate for 127.0.0.1 it signed, with the openssl CLI."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=thaw-test-ca")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "san.ext")
    return folder / "ca.pem", TlsFiles(folder / "server.pem", folder / "server.key")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a test certificate")
async def test_tls_is_one_setting_away(tmp_path):
    ca, tls = make_certificates(tmp_path)
    with own_server(tmp_path, tls) as server:
        url, creds = server.url.replace("nats://", "tls://"), server.creds
        await bus_auth.provision_streams(url, bus_auth.with_ca(creds[P.OPERATOR], ca))
        nc = await bus.connect(url, "agent-a", bus_auth.with_ca(creds["agent-a"], ca))
        try:
            ack = await nc.jetstream().publish(subjects.node_capacity("a"), b"{}", timeout=2)
            assert ack.stream == streams.NODES.name
        finally:
            await nc.close()
        with pytest.raises(ssl.SSLCertVerificationError):  # a client without the CA trusts no impostor
            await nats.connect(url, allow_reconnect=False, connect_timeout=2, user="agent-a",
                               password=creds["agent-a"].password)
