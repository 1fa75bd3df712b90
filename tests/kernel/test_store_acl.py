"""Valkey users per role (issue 10): each service does its own part of a pod's life as its own
user, and nothing more; a client without credentials does nothing at all.

One real valkey-server loads the ACL file that `thaw_core.store.acl` writes. The positive tests
call the real store classes each service calls; the refusal table is the attack surface, each
row with the reason Valkey gives (a command the role lacks, a key outside its patterns, or no
login). Every test names its own function, pod, node and tenant, so they share the server.
"""

import itertools
import json
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ResponseError

from bus_schemas import redis_keys as K
from bus_schemas.functions import FunctionSpec, Resources, Scaling, spec_digest
from bus_schemas.nodes import GpuCapacity, NodeCapacity
from bus_schemas.pods import PodState
from snapshotter.manifest import Manifest
from thaw_core import servers
from thaw_core.ports import free_port
from thaw_core.store import events
from thaw_core.store.acl import (
    AGENT, GATEWAY, OPERATOR, PLACEMENT, ROLES, SNAPSHOTTER, Creds, CredentialsError, acl_file_text,
    credentials_path, ensure_credentials, read_credentials, valkey_args, write_acl_file,
)
from thaw_core.store.apikeys import INVOKER, ApiKeys
from thaw_core.store.client import connect_redis
from thaw_core.store.functions import Functions
from thaw_core.store.leases import Leases
from thaw_core.store.ledger import Ledger, Reservation
from thaw_core.store.nodes import Nodes
from thaw_core.store.workload import Shape, ShapeCount, WorkloadCounts
from thaw_core.store.pods import Pods
from thaw_core.store.quotas import Quotas
from thaw_core.store.snapshots import SnapshotCatalog, SnapshotIndex, announce_snapshotter, withdraw_snapshotter
from thaw_core.store.start_failures import StartFailureLog

COMMAND, KEY, AUTH = "a command the role lacks", "a key outside the role's patterns", "no login"


@dataclass(frozen=True)
class AclServer:
    url: str
    port: int
    creds: dict[str, Creds]


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("valkey-acl")
    creds = ensure_credentials(base / "secrets")
    aclfile = write_acl_file(base / "users.acl", creds)
    port = free_port()
    # The server's own guards on DEBUG and MODULE are lowered, so that refusing them is the ACL's doing.
    cmd = [servers.valkey_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(base),
           "--save", "", "--appendonly", "no", "--enable-debug-command", "yes", "--enable-module-command", "yes",
           *valkey_args(aclfile)]
    with open(base / "valkey.log", "ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        servers.wait_for_port(port, process, 15, "valkey-server")
        yield AclServer(f"redis://127.0.0.1:{port}/0", port, creds)
    finally:
        process.kill()
        process.wait()


@pytest.fixture
async def as_role(acl_server):
    """role -> a client connected as that role's user, the way its service connects."""
    clients = {role: connect_redis(acl_server.url, acl_server.creds[role]) for role in ROLES}
    yield clients
    for client in clients.values():
        await client.aclose()


_names = itertools.count()


@dataclass(frozen=True)
class World:
    """One deployed function with one pending pod on one node, made by the roles that make them."""

    tenant: str
    fn: str
    node: str
    pod: str
    spec: FunctionSpec


async def a_world(c: dict, concurrency: int = 2) -> World:
    n = next(_names)
    tenant, fn, node, pod = f"tenant-{n}", f"fn-{n}", f"node-{n}", f"fn-{n}-pod"
    spec = FunctionSpec(name=fn, command=("serve",), tenant=tenant, resources=Resources(vram_mib=400),
                        scaling=Scaling(max_pods=2, concurrency=concurrency))
    await Quotas(c[OPERATOR]).set(tenant, max_pods=5, max_vram_mib=4000)
    await Functions(c[GATEWAY]).put(spec)
    await Nodes(c[PLACEMENT]).upsert_capacity(NodeCapacity(
        node=node, cpu_milli=4000, memory_mib=8192, gpus=(GpuCapacity(index=0, model="A", vram_mib=1000),)))
    outcome = await Ledger(c[PLACEMENT]).reserve(a_reservation(pod, spec, node), 1000)
    assert outcome == "ok"
    return World(tenant, fn, node, pod, spec)


def a_reservation(pod: str, spec: FunctionSpec, node: str) -> Reservation:
    return Reservation(pod=pod, fn=spec.name, node=node, gpus=(0,), vram_mib=spec.resources.vram_mib,
                       gpu_milli=400, cpu_milli=500, memory_mib=512, max_pods=spec.scaling.max_pods,
                       concurrency=spec.scaling.concurrency, tenant=spec.tenant)


async def started(c: dict, w: World) -> None:
    """The agent brings the world's pod up to idle, serving at an endpoint."""
    pods = Pods(c[AGENT])
    assert (await pods.move(w.pod, PodState.STARTING, 2000)).applied
    assert (await pods.move(w.pod, PodState.IDLE, 3000, endpoint="http://127.0.0.1:1")).applied


async def ledger_of(r, node: str) -> tuple[int, int, int]:
    [usage] = [n for n in await Nodes(r).all() if n.name == node]
    return usage.cpu_reserved, usage.gpus[0].vram_reserved_mib, usage.gpus[0].milli_reserved


def a_manifest(w: World, sid: str) -> Manifest:
    return Manifest(id=sid, fn=w.fn, node=w.node, runtime="process", created_ms=5000, sha256="0" * 64,
                    size_bytes=10, raw_bytes=20, arch="x86_64", kernel="6", criu_version="4",
                    spec_digest=spec_digest(w.spec))


# --- each role does its part ----------------------------------------------------------------------

async def test_the_gateway_authenticates_deploys_leases_and_lists(as_role):
    w = await a_world(as_role)
    await started(as_role, w)
    r = as_role[GATEWAY]
    keys = ApiKeys(r)
    invoker = await keys.create(w.tenant, INVOKER)  # POST /v1/keys by the tenant's admin
    assert (await keys.caller(invoker)).role == INVOKER
    fns = Functions(r)
    assert await fns.put(w.spec) == 2
    assert await fns.get(w.fn) == w.spec
    assert w.spec in await fns.all()
    assert await fns.unplaceable(w.fn, since_ms=0) == ""
    leases = Leases(r)
    leased = await leases.acquire(w.fn, 2, "gw-1", ttl_ms=6000, now_ms=4000)
    assert [s.pod for s in leased.slots] == [w.pod, w.pod]
    assert [m.pod for m in leased.became_busy] == [w.pod]
    assert await leases.renew(w.pod, [s.member for s in leased.slots], 6000, 5000, used=True) == []
    assert (await leases.release(w.pod, [s.member for s in leased.slots], 6000)).to == PodState.IDLE
    assert (await Pods(r).get(w.pod)).state == PodState.IDLE
    assert w.pod in {p.pod for p in await Pods(r).live()}
    assert w.node in {n.name for n in await Nodes(r).all()}
    assert isinstance(await SnapshotCatalog(r).all(), list)
    assert await fns.delete(w.fn)


async def test_placement_records_nodes_reserves_scales_down_and_reclaims(as_role):
    w = await a_world(as_role)
    r = as_role[PLACEMENT]
    nodes = Nodes(r)
    await nodes.heartbeat(w.node, 2000)
    assert await ledger_of(r, w.node) == (500, 400, 400)
    assert await Functions(r).get(w.fn) == w.spec
    # its fleet-wide reads and heartbeat writes, by one script each (thaw_core/store/bulk.py)
    await nodes.heartbeats({w.node: 2500})
    assert (await nodes.marks([w.node]))[w.node].heartbeat_ms == 2500
    assert await Functions(r).get_many([w.fn]) == {w.fn: w.spec}
    assert [p.pod for p in await Pods(r).get_many([w.pod])] == [w.pod]
    assert [p.pod for p in (await Pods(r).live_by_function([w.fn]))[w.fn]] == [w.pod]
    assert (await Quotas(r).describe(w.tenant)).startswith("1 of 5 pods")
    assert await SnapshotCatalog(r).usable(w.fn, spec_digest(w.spec), w.node) is None
    await Functions(r).record_unplaceable(w.fn, "no GPU fits", 1)
    second = f"{w.pod}-2"
    assert await Ledger(r).reserve(a_reservation(second, w.spec, w.node), 2000) == "ok"
    assert {w.pod, second} <= {p.pod for p in await Pods(r).live(w.fn)}
    await started(as_role, w)
    leases = Leases(r)
    assert await leases.sweep(w.pod, 4000) is None
    assert (await leases.begin_drain(w.pod, unused_since_ms=5000, now_ms=6000, reason="idle timeout")).applied
    assert (await Pods(r).move(second, PodState.DRAINING, 6000, reason="scale down")).applied
    assert (await Ledger(r).release(second, PodState.FAILED, "node lost", 7000)).applied
    assert (await Ledger(r).release(w.pod, PodState.STOPPED, "idle", 7000)).applied
    assert await ledger_of(r, w.node) == (0, 0, 0)
    shape = Shape(fn=w.fn, cpu_milli=500, memory_mib=400, gpu_count=1, vram_mib=400)
    learned = WorkloadCounts(r)
    assert [c.shape for c in await learned.add([ShapeCount(shape=shape, count=1.0, at_ms=7000)], 7000, 3600)] == [shape]
    assert [c.shape for c in await learned.load()] == [shape]


async def test_the_agent_starts_records_and_stops_its_pod(as_role):
    w = await a_world(as_role)
    r = as_role[AGENT]
    pods = Pods(r)
    assert await Functions(r).get(w.fn) == w.spec
    assert (await pods.get(w.pod)).state == PodState.PENDING
    moved = await pods.move(w.pod, PodState.RESTORING, 2000)
    assert (moved.applied, moved.found) == (True, "pending")
    assert await SnapshotCatalog(r).capabilities(w.node) == ()
    assert await SnapshotCatalog(r).usable(w.fn, spec_digest(w.spec), w.node) is None
    await events.record(r, w.pod, "restore_failed", "cold start instead: no snapshotter", 2100)
    assert [e["event"] for e in await events.read(r, w.pod)] == ["restore_failed"]
    assert (await pods.move(w.pod, PodState.STARTING, 2200)).applied
    await pods.set_fields(w.pod, runtime_ref="pid:42", log="/tmp/w.log")
    assert (await pods.move(w.pod, PodState.IDLE, 3000, endpoint="http://x")).applied
    assert (await pods.move(w.pod, PodState.DRAINING, 4000, reason="stop")).applied
    assert (await Ledger(r).release(w.pod, PodState.STOPPED, "stop", 5000)).applied
    assert not (await Ledger(r).release(w.pod, PodState.STOPPED, "stop", 5000)).applied
    assert await ledger_of(as_role[PLACEMENT], w.node) == (0, 0, 0)


async def test_the_agent_counts_failed_starts_that_placement_and_the_gateway_read(as_role):
    w = await a_world(as_role)
    digest = spec_digest(w.spec)
    agent = StartFailureLog(as_role[AGENT])
    assert await agent.record(w.fn, digest, "the worker exited with exit code 3", 1000) == 1
    assert await agent.record(w.fn, digest, "the worker exited with exit code 3", 2000) == 2
    for role in (PLACEMENT, GATEWAY):
        assert (await StartFailureLog(as_role[role]).get(w.fn)).failures == 2
    many = await StartFailureLog(as_role[PLACEMENT]).get_many([w.fn, "never-failed"])
    assert many[w.fn].failures == 2 and many["never-failed"] is None
    await agent.clear(w.fn, digest)
    assert await StartFailureLog(as_role[PLACEMENT]).get(w.fn) is None
    assert await StartFailureLog(as_role[PLACEMENT]).get_many([w.fn]) == {w.fn: None}


async def test_the_snapshotter_announces_indexes_and_forgets_snapshots(as_role):
    w = await a_world(as_role)
    await started(as_role, w)
    r = as_role[SNAPSHOTTER]
    await announce_snapshotter(r, w.node, ("criu",), ttl_s=5)
    assert (await Pods(r).get(w.pod)).state == PodState.IDLE
    assert w.pod in {p.pod for p in await Pods(r).live()}
    assert (await Pods(r).get(w.pod)).gpus == (0,)  # restores.py
    index, sid = SnapshotIndex(r), f"snap-{w.fn}"
    await index.record_failure(w.fn, "criu dump failed", 4000)
    assert (await index.last_failure(w.fn)).error == "criu dump failed"
    await index.add(a_manifest(w, sid), ("local", "shared"))
    assert await SnapshotCatalog(as_role[GATEWAY]).last_failure(w.fn) is None, "a success ends the failure"
    assert (await index.latest(w.fn)).tiers == ("local", "shared")
    assert w.fn in await index.functions()
    assert (await SnapshotCatalog(r).usable(w.fn, spec_digest(w.spec), w.node)).id == sid
    assert (await SnapshotCatalog(as_role[PLACEMENT]).usable(w.fn, spec_digest(w.spec), w.node)).id == sid
    await index.remove(w.fn, sid)
    assert await index.for_function(w.fn) == []
    await withdraw_snapshotter(r, w.node)
    assert await SnapshotCatalog(as_role[AGENT]).capabilities(w.node) == ()


async def test_the_operator_makes_keys_sets_quotas_and_reads_everything(as_role):
    """What `thaw up` (its first key), `thaw keys`, `thaw quota` and `thaw snapshots --redis` do."""
    w = await a_world(as_role)
    r = as_role[OPERATOR]
    keys = ApiKeys(r)
    key = await keys.create("default")
    assert await keys.tenant_of(key) == "default"
    quotas = Quotas(r)
    await quotas.set(w.tenant, max_pods=None, max_vram_mib=800)
    assert (await quotas.get(w.tenant)).max_vram_mib == 800
    assert "1 of unlimited pods" in await quotas.describe(w.tenant)
    assert isinstance(await SnapshotCatalog(r).all(), list)
    assert (await Pods(r).get(w.pod)).fn == w.fn


async def test_the_gateway_drains_a_node_for_an_admin_and_placement_sees_it(as_role):
    w = await a_world(as_role)
    assert await Nodes(as_role[GATEWAY]).set_draining(w.node, True, 5000)
    [node] = [n for n in await Nodes(as_role[PLACEMENT]).all() if n.name == w.node]
    assert node.draining
    assert await Ledger(as_role[PLACEMENT]).reserve(a_reservation(f"{w.pod}-3", w.spec, w.node), 6000) == "node_draining"
    assert await Nodes(as_role[GATEWAY]).set_draining(w.node, False, 7000)


# --- and nothing more -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Lua:
    """A script loaded and run by the role itself, declaring no keys: the keys it names are
    built inside Lua, as the lease acquire and the ledger release build theirs."""

    source: str


@dataclass(frozen=True)
class Refused:
    role: str
    what: str
    action: tuple | Lua
    because: str


APIKEY = K.api_key("0" * 64)
MINT = ("SET", APIKEY, "victim:admin:0")  # a working admin key for tenant "victim"
SPEC = ("HSET", K.function("victim-fn"), "spec", '{"name": "victim-fn", "command": ["steal"]}')
GPU_COUNTER = ("HINCRBY", K.gpu("n1", 0), "vram_reserved", -100000)

REFUSALS = [
    Refused(AGENT, "mint an API key", MINT, COMMAND),
    Refused(PLACEMENT, "mint an API key", MINT, COMMAND),
    Refused(SNAPSHOTTER, "mint an API key", MINT, KEY),
    Refused(PLACEMENT, "revoke an API key from Lua", Lua(f"return redis.call('DEL', '{APIKEY}')"), KEY),
    Refused(AGENT, "revoke an API key from Lua", Lua(f"return redis.call('DEL', '{APIKEY}')"), KEY),
    Refused(GATEWAY, "read the ACL file's hashes", ("ACL", "LIST"), COMMAND),
    Refused(AGENT, "rewrite a function's command", SPEC, KEY),
    Refused(SNAPSHOTTER, "rewrite a function's command", SPEC, KEY),
    Refused(SNAPSHOTTER, "mark a pod idle", ("HSET", K.pod("p1"), "state", "idle"), KEY),
    Refused(SNAPSHOTTER, "take a lease slot", ("ZADD", K.pod_leases("p1"), 9e12, "evil:1"), KEY),
    Refused(SNAPSHOTTER, "drop a pod's leases", ("DEL", K.pod_leases("p1")), KEY),
    Refused(GATEWAY, "free GPU capacity it does not hold", GPU_COUNTER, KEY),
    Refused(GATEWAY, "free GPU capacity from Lua", Lua(f"return redis.call('HINCRBY', '{K.gpu('n1', 0)}', "
                                                       "'vram_reserved', -100000)"), KEY),
    Refused(GATEWAY, "drop a reservation", ("DEL", K.reservation("p1")), KEY),
    Refused(GATEWAY, "free a node's CPU it does not hold", ("HINCRBY", K.node("n1"), "cpu_reserved", -100000), KEY),
    Refused(GATEWAY, "free a node's CPU from Lua", Lua(f"return redis.call('HINCRBY', '{K.node('n1')}', "
                                                       "'cpu_reserved', -100000)"), KEY),
    Refused(GATEWAY, "raise a tenant's quota", ("HSET", K.tenant_quota("t"), "max_pods", 1000), KEY),
    Refused(AGENT, "read an API key's tenant", ("GET", APIKEY), KEY),
    Refused(PLACEMENT, "forget a crash loop", ("DEL", K.start_failures("victim-fn")), KEY),
    Refused(GATEWAY, "forget a crash loop", ("HSET", K.start_failures("victim-fn"), "failures", 0), KEY),
    Refused(SNAPSHOTTER, "read a crash loop", ("HGETALL", K.start_failures("victim-fn")), KEY),
    Refused(SNAPSHOTTER, "run a script", Lua("return 1"), COMMAND),
    Refused(GATEWAY, "skew what placement learned of the workload", ("HSET", K.WORKLOAD, "x", "y"), KEY),
    Refused(AGENT, "skew what placement learned of the workload", ("HSET", K.WORKLOAD, "x", "y"), KEY),
    Refused(AGENT, "name every key", ("SCAN", 0), COMMAND),
    Refused(PLACEMENT, "name every key", ("SCAN", 0), COMMAND),
    Refused(AGENT, "publish on Redis pub/sub", ("PUBLISH", "thaw", "x"), COMMAND),
    *[Refused(role, what, action, COMMAND) for role in ROLES for what, action in [
        ("wipe the store", ("FLUSHALL",)),
        ("wipe the database", ("FLUSHDB",)),
        ("reconfigure the server", ("CONFIG", "SET", "maxmemory-policy", "allkeys-random")),
        ("reopen the default user", ("ACL", "SETUSER", "default", "on", "nopass", "~*", "+@all")),
        ("list every key", ("KEYS", "*")),
        ("run DEBUG", ("DEBUG", "SLEEP", "0")),
        ("list or load modules", ("MODULE", "LIST")),
    ]],
    # What key patterns cannot stop (see thaw_core/store/acl.py). Strict: a fix makes these fail here.
    *[pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=why)) for case, why in [
        (Refused(AGENT, "free GPU capacity it does not hold", GPU_COUNTER, KEY),
         "the agent releases its pods' reservations, so it writes every node's GPU counters"),
        (Refused(AGENT, "transition another node's pod", ("HSET", K.pod("p1"), "state", "idle"), KEY),
         "pod keys do not name their node; the agent checks the pod's node in Redis before acting"),
        (Refused(PLACEMENT, "raise a tenant's quota", ("HSET", K.tenant_quota("t"), "max_pods", 1000), KEY),
         "the ledger's reserve script declares the quota key, and a declared key must be writable"),
    ]],
]


def _id(case) -> str:
    case = case.values[0] if hasattr(case, "values") else case
    return f"{case.role}: {case.what}"


@pytest.mark.parametrize("case", REFUSALS, ids=[_id(c) for c in REFUSALS])
async def test_a_role_is_refused_what_is_not_its_part(as_role, case):
    r = as_role[case.role]
    with pytest.raises(ResponseError) as caught:
        if isinstance(case.action, Lua):
            await r.evalsha(await r.script_load(case.action.source), 0)
        else:
            await r.execute_command(*case.action)
    assert _reason(caught.value) == case.because, str(caught.value)


def _reason(exc: Exception) -> str:
    text = str(exc).lower()
    if "no permissions to run" in text:
        return COMMAND
    if "no permissions to access a key" in text:
        return KEY
    return f"not an ACL refusal: {exc}"


@pytest.mark.parametrize("who", ["no credentials", "default user", "wrong password", "unknown user"])
async def test_a_client_without_a_role_s_credentials_can_do_nothing(acl_server, who):
    login = {"no credentials": {}, "default user": {"username": "default", "password": ""},
             "wrong password": {"username": GATEWAY, "password": "guess"},
             "unknown user": {"username": "root", "password": acl_server.creds[OPERATOR].password}}[who]
    r = aioredis.Redis(host="127.0.0.1", port=acl_server.port, retry=Retry(NoBackoff(), 0), **login)
    try:
        with pytest.raises(AuthenticationError):
            await r.execute_command(*MINT)
    finally:
        await r.aclose()


# --- the files ------------------------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_credentials_are_made_once_private_and_kept_across_restarts(tmp_path):
    secrets_dir = tmp_path / "secrets"
    first = ensure_credentials(secrets_dir)
    assert ensure_credentials(secrets_dir) == first
    assert set(first) == set(ROLES) and len({c.password for c in first.values()}) == len(ROLES)
    assert _mode(secrets_dir) == 0o700
    for role in ROLES:
        path = credentials_path(secrets_dir, role)
        assert _mode(path) == 0o600
        assert json.loads(path.read_text()) == {"user": role, "password": first[role].password}
        assert read_credentials(path, role) == first[role]
    assert sorted(p.name for p in secrets_dir.iterdir()) == sorted(f"{r}.json" for r in ROLES), "no temp files left"


def test_the_acl_file_turns_the_default_user_off_and_holds_no_password(tmp_path):
    creds = ensure_credentials(tmp_path / "secrets")
    path = write_acl_file(tmp_path / "users.acl", creds)
    text = path.read_text()
    assert _mode(path) == 0o600 and text == acl_file_text(creds)
    assert text.splitlines()[0] == "user default reset off"
    assert [line.split()[1] for line in text.splitlines()] == ["default", *ROLES]
    assert not any(c.password in text for c in creds.values())
    assert [line.split()[1] for line in text.splitlines() if "+@all" in line] == [OPERATOR]


def test_a_password_never_reaches_a_log_line():
    assert "s3cret" not in repr(Creds("gateway", "s3cret")) + str(Creds("gateway", "s3cret"))


@pytest.mark.parametrize("content", ["", "{}", '{"user": "gateway"}', '{"user": "agent", "password": "x"}',
                                     '{"user": "gateway", "password": ""}', "[1]"])
def test_a_credentials_file_that_is_not_the_role_s_is_refused_with_what_to_do(tmp_path, content):
    path = credentials_path(tmp_path, GATEWAY)
    path.write_text(content)
    with pytest.raises(CredentialsError, match="delete it") as caught:
        read_credentials(path, GATEWAY)
    assert caught.value.path == path
