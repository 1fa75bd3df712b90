"""One trace per wake-up, exported over OTLP/HTTP: the gateway's `invoke`, placement's lease,
the agent's placement and health wait, and for a restore the snapshotter's `restore`, all under
the trace id of the call that woke the function. The collector is a real HTTP server here that
decodes what the services' OTLP exporters send (protobuf); the services run as processes."""

import asyncio

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from thaw_core import servers
from thaw_core.ports import free_port

from tests.conftest import eventually
from tests.platform.conftest import _healthy, deploy, echo_spec, invoke
from tests.platform.harness import Harness
from tests.platform.test_snapshots_e2e import Watch, _snapshotter_up, criu_works  # noqa: F401


class Collector:
    """An OTLP/HTTP trace receiver: (service, span name, trace id, attributes) of every span."""

    def __init__(self):
        self.spans: list[tuple[str, str, str, dict]] = []
        self.port = free_port()

    async def receive(self, request: web.Request) -> web.Response:
        sent = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in sent.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    attributes = {a.key: a.value.string_value or a.value.int_value or a.value.bool_value
                                  for a in s.attributes}
                    self.spans.append((service, s.name, s.trace_id.hex(), attributes))
        return web.Response(status=200)

    def trace_of(self, pod: str) -> dict[str, set[str]] | None:
        """service -> span names in the trace of the gateway's call answered by `pod`."""
        ids = {t for svc, name, t, a in self.spans if svc == "gateway" and name == "invoke" and a.get("thaw.pod") == pod}
        if not ids:
            return None
        out: dict[str, set[str]] = {}
        for svc, name, t, _ in self.spans:
            if t in ids:
                out.setdefault(svc.split("-node-")[0], set()).add(name)
        return out


@pytest.fixture
async def collector():
    c = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", c.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", c.port).start()
    yield c
    await runner.cleanup()


async def test_a_cold_start_and_a_restore_are_each_one_trace_across_the_services(
        criu_works, collector, tmp_path, redis_url, http, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # ms: spans leave within a test's patience
    h = Harness(tmp_path, servers.start_nats(tmp_path / "nats"), redis_url)
    for name in ("placement", "agent", "gateway", "snapshotter"):
        h.start(name)
    watch = await Watch().start(h.nats.url)
    try:
        await eventually(lambda: _snapshotter_up(h), 30, what="the snapshotter to announce itself")
        await eventually(lambda: _healthy(h.url), 30, what="gateway /healthz")
        await deploy(http, h.url, echo_spec(max_pods=1, idle_timeout_s=2))
        _, _, cold = await invoke(http, h.url, "echo", b"wake")
        trace = await eventually(lambda: _complete(collector.trace_of(cold)), 20, what=f"the trace of {cold}'s start")
        assert trace == {"gateway": {"invoke"}, "placement": {"consume lease.requested"},
                         "agent": {"consume place.assigned", "await healthy"}}, trace

        await eventually(lambda: watch.ready, 30, what="echo's snapshot")
        await eventually(lambda: "stopped" in watch.states_of(cold), 30, what=f"{cold} to scale to zero")
        _, _, restored = await invoke(http, h.url, "echo", b"again")
        assert "restoring" in watch.states_of(restored)
        trace = await eventually(lambda: "snapshotter" in (collector.trace_of(restored) or {}) and
                                 _complete(collector.trace_of(restored)), 20, what=f"the trace of {restored}'s restore")
        assert trace["snapshotter"] == {"restore"} and "await healthy" in trace["agent"], trace
        starts = {a.get("thaw.start") for svc, name, _, a in collector.spans if name == "invoke"}
        assert {"cold", "restored"} <= starts, "each invoke span says what the call waited for"
    finally:
        await watch.nc.close()
        h.stop()
        await asyncio.sleep(0)


def _complete(trace: dict[str, set[str]] | None) -> dict[str, set[str]] | None:
    """The trace once the agent's health wait (the last span of a start) has arrived."""
    return trace if trace and "await healthy" in trace.get("agent", set()) else None
