"""GET /dashboard and GET /v1/dashboard through the real HTTP bridge (keys, functions and nodes in
a real Redis): the page is self-contained, the document needs an admin key and holds the
caller's tenant's functions and recent calls only, and the gateway keeps a bounded number of
recent calls."""

import aiohttp
import msgspec
import pytest

from bus_schemas.functions import FunctionSpec
from bus_schemas.nodes import GpuCapacity, NodeCapacity
from bus_schemas.snapshots import Manifest
from gateway.auth import KeyCache
from gateway.dispatcher import Dispatcher
from gateway.http_api import HttpApi
from gateway.http_server import HttpServer
from gateway.metrics import POD_STATES_KEPT, RECENT_CALLS, RECENT_PODS, GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.specs import SpecCache
from gateway.upstream import Upstream
from thaw_core.ports import free_port
from thaw_core.store.apikeys import INVOKER, ApiKeys
from thaw_core.store.functions import Functions
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods
from thaw_core.store.snapshots import SnapshotCatalog, SnapshotIndex

DOCUMENT_KEYS = {"tenant", "at_ms", "functions", "pods", "failed", "nodes", "latencies", "snapshots", "dead",
                 "dlq_served"}


@pytest.fixture
async def gateway(r, redis_url):
    """A gateway over Redis with acme's `echo`, another tenant's `theirs`, one node with two GPUs
    and a call of each function answered; yields (url, metrics)."""
    for name, tenant in (("echo", "acme"), ("theirs", "other")):
        await Functions(r).put(FunctionSpec(name=name, tenant=tenant, command=("x",)))
    gpus = tuple(GpuCapacity(index=i, model="Mock-24G", vram_mib=24576) for i in range(2))
    await Nodes(r).upsert_capacity(NodeCapacity(node="n1", cpu_milli=2000, memory_mib=4096, gpus=gpus))
    port = free_port()
    specs, upstream, metrics = SpecCache(Functions(r), 60), Upstream(), GatewayMetrics()
    dispatcher = Dispatcher(GatewaySettings(nats_url="", redis_url=redis_url, port=port), None, r, specs, upstream)
    api = HttpApi(dispatcher, KeyCache(ApiKeys(r), 60), Functions(r), specs, Pods(r), Nodes(r), None, 1 << 20,
                  metrics, SnapshotCatalog(r))
    server = HttpServer(api, "127.0.0.1", port)
    await server.start()
    metrics.observe_call("echo", "cold", 2.5, 2.5)
    metrics.observe_call("theirs", "warm", 0.002, 0.002)
    yield f"http://127.0.0.1:{port}", metrics
    await server.stop(grace_s=1)
    upstream.close()


async def get(url: str, key: str | None = None) -> tuple[int, dict, bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_the_document_holds_only_the_callers_functions_and_their_calls(gateway, r):
    url, _ = gateway
    status, _, body = await get(url + "/v1/dashboard", await ApiKeys(r).create("acme"))
    assert status == 200, body
    doc = msgspec.json.decode(body)
    assert set(doc) == DOCUMENT_KEYS and doc["tenant"] == "acme"
    assert [(f["name"], f["status"]) for f in doc["functions"]] == [("echo", "ok")]
    assert [(c["fn"], c["start"], c["seconds"]) for c in doc["latencies"]] == [("echo", "cold", 2.5)]
    assert [(n["name"], [(g["index"], g["vram_mib"]) for g in n["gpus"]]) for n in doc["nodes"]] == \
        [("n1", [(0, 24576), (1, 24576)])], "nodes are no tenant's data: every one is shown"
    assert (doc["pods"], doc["failed"], doc["snapshots"], doc["dead"], doc["dlq_served"]) == ([], [], [], [], False)


@pytest.mark.parametrize("role, status, says", [
    (None, 401, "missing or unknown API key"),
    (INVOKER, 403, "the dashboard needs an admin key of tenant 'acme'; this key is an invoker key"),
])
async def test_the_document_needs_an_admin_key(gateway, r, role, status, says):
    key = await ApiKeys(r).create("acme", role=role) if role else "thaw_wrong"
    answered, _, body = await get(gateway[0] + "/v1/dashboard", key)
    assert answered == status and says in msgspec.json.decode(body)["error"]["message"], body


async def test_the_page_is_served_without_a_key_and_loads_nothing_from_elsewhere(gateway):
    status, headers, page = await get(gateway[0] + "/dashboard")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    text = page.decode()
    assert "/v1/dashboard" in text and 'sessionStorage' in text
    for outside in ("src=", "href=", "@import", "url("):
        assert outside not in text, f"the page must be self-contained, found {outside!r}"


def test_a_pods_states_are_kept_once_each_in_order_for_the_last_pods_only():
    metrics = GatewayMetrics()
    for state, at_ms in (("pending", 1), ("starting", 2), ("starting", 3), ("idle", 9)):
        metrics.observe_pod_state("p0", state, at_ms)
    assert metrics.pod_states["p0"] == [("pending", 1), ("starting", 2), ("idle", 9)]
    for i in range(1, RECENT_PODS + 1):
        metrics.observe_pod_state(f"p{i}", "pending", i)
    assert len(metrics.pod_states) == RECENT_PODS and "p0" not in metrics.pod_states
    for i in range(POD_STATES_KEPT + 5):
        metrics.observe_pod_state("p1", ("idle", "draining")[i % 2], i)
    assert len(metrics.pod_states["p1"]) == POD_STATES_KEPT and list(metrics.pod_states)[-1] == "p1"


def test_the_gateway_keeps_the_last_calls_only():
    metrics = GatewayMetrics()
    for i in range(RECENT_CALLS + 50):
        metrics.observe_call("echo", "warm", i / 1000, i / 1000)
    assert len(metrics.recent) == RECENT_CALLS and metrics.recent[0][3] == 50 / 1000


async def test_a_function_says_why_its_last_snapshot_failed_until_one_succeeds(gateway, r):
    url, _ = gateway
    key = await ApiKeys(r).create("acme")
    _, _, body = await get(url + "/v1/functions/echo", key)
    assert msgspec.json.decode(body)["function"]["snapshot_failure"] is None
    await SnapshotIndex(r).record_failure("echo", "criu dump: pid 42 has an unsupported socket", 1234)
    _, _, body = await get(url + "/v1/functions/echo", key)
    assert msgspec.json.decode(body)["function"]["snapshot_failure"] == {
        "error": "criu dump: pid 42 has an unsupported socket", "at_ms": 1234}
    await SnapshotIndex(r).add(Manifest(id="s1", fn="echo", node="n1", runtime="process", created_ms=2000,
                                        sha256="0", size_bytes=1, raw_bytes=1, arch="x86_64", kernel="6",
                                        criu_version="4"), ("local",))
    _, _, body = await get(url + "/v1/functions/echo", key)
    assert msgspec.json.decode(body)["function"]["snapshot_failure"] is None
