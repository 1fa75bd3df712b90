"""A warm invoke through the real HTTP bridge, dispatcher and worker connections (API keys and
specs in a real Redis, a socket server as the worker): it is answered, and it leaves nothing
for Python's cyclic garbage collector. Under load the collector re-scanning a reference cycle
per call cost the gateway about 6% of its CPU, so a cycle coming back is a regression."""

import asyncio
import gc

import msgspec
import pytest

from bench.http_load import ClosedLoop
from bus_schemas.functions import FunctionSpec
from gateway.auth import KeyCache
from gateway.dispatcher import Dispatcher
from gateway.http_api import HttpApi
from gateway.http_server import HttpServer
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.specs import SpecCache
from gateway.upstream import Upstream
from thaw_core.ports import free_port
from thaw_core.store.apikeys import ApiKeys
from thaw_core.store.functions import Functions
from thaw_core.store.leases import Slot


class EchoWorker(asyncio.Protocol):
    """Answers each request with its body (requests arrive whole: small, one at a time)."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        body = data.split(b"\r\n\r\n", 1)[1]
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))


@pytest.fixture
async def warm_gateway(r, redis_url):
    """A gateway holding 4 slots on one warm echo worker; yields (port, api key, metrics)."""
    loop = asyncio.get_running_loop()
    worker_port, gateway_port = free_port(), free_port()
    worker = await loop.create_server(EchoWorker, "127.0.0.1", worker_port)
    key = await ApiKeys(r).create("acme")
    spec = msgspec.json.decode(b'{"name": "echo", "tenant": "acme", "command": ["x"], '
                               b'"resources": {"vram_mib": 1024}, "scaling": {"concurrency": 4}}', type=FunctionSpec)
    await Functions(r).put(spec)
    settings = GatewaySettings(nats_url="", redis_url=redis_url, port=gateway_port)
    specs, upstream = SpecCache(Functions(r), 60), Upstream()
    dispatcher = Dispatcher(settings, None, r, specs, upstream)
    pool = dispatcher.pool("echo")
    for i in range(4):  # as if leased from Redis: this test is about the call, not the lease
        slot = Slot(pod="pod-1", endpoint=f"http://127.0.0.1:{worker_port}", member=f"pod-1:{i}")
        pool.held[slot.member] = slot
        pool.free.append(slot)
    metrics = GatewayMetrics()
    api = HttpApi(dispatcher, KeyCache(ApiKeys(r), 60), Functions(r), specs, None, None, None, 1 << 20, metrics)
    server = HttpServer(api, "127.0.0.1", gateway_port)
    await server.start()
    yield gateway_port, key, metrics
    await server.stop(grace_s=1)
    upstream.close()
    worker.close()


async def test_warm_calls_are_answered_and_leave_no_reference_cycles(warm_gateway):
    port, key, metrics = warm_gateway
    load = ClosedLoop("127.0.0.1", port, "/v1/functions/echo/invoke", b'{"x": 1}', {"Authorization": f"Bearer {key}"})
    try:
        await load.run(4, max_calls=200)  # warm: caches filled, connections to the worker open
        gc.collect()
        gc.disable()
        try:
            _, latencies = await load.run(4, max_calls=2000)
            cyclic_garbage = gc.collect()
        finally:
            gc.enable()
    finally:
        load.close()
    assert len(latencies) >= 2000
    assert metrics.calls[("echo", "http", 200)] >= 2200
    assert cyclic_garbage < 20, f"{cyclic_garbage} objects in reference cycles after {len(latencies)} calls"
