"""Runs a gateway: HTTP bridge, infer.request responder, async-call consumer, lease renewal, event
listeners."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus_schemas import subjects
from bus_schemas.codec import DecodeError, decode
from bus_schemas.pods import PodStateChanged
from bus_schemas.snapshots import SnapshotReady
from bus_schemas import permissions
from thaw_core import bus, bus_auth
from thaw_core.store.apikeys import ApiKeys
from thaw_core.store import acl
from thaw_core.store.client import connect_redis_as
from thaw_core.store.functions import Functions
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods
from thaw_core.store.snapshots import SnapshotCatalog
from thaw_core.shutdown import run_steps

from gateway.async_calls import AsyncCalls
from gateway.auth import KeyCache
from gateway.call_store import CallStore
from gateway.calls_api import CallsApi
from gateway.dispatcher import Dispatcher
from gateway.http_api import HttpApi
from gateway.http_server import HttpServer
from gateway.logs_api import LogsApi
from gateway.metrics import GatewayMetrics
from gateway.nats_api import NatsApi
from gateway.nats_stream import NatsStreams
from gateway.settings import GatewaySettings
from gateway.specs import SpecCache
from gateway.upstream import Upstream

log = logging.getLogger(__name__)
ASYNC_HEADROOM_BYTES = 16 << 10  # for the headers that travel with an async call's body or answer


async def run_gateway(settings: GatewaySettings, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
    r = connect_redis_as(settings.redis_url, acl.GATEWAY, settings.redis_creds)
    creds = bus_auth.for_service(settings.nats_creds, permissions.GATEWAY)
    nc = await bus.connect(settings.nats_url, "gateway", creds)
    js = nc.jetstream()
    await bus_auth.streams_ready(js, creds)
    functions = Functions(r)
    specs = SpecCache(functions, settings.spec_cache_s)
    keys = KeyCache(ApiKeys(r), settings.auth_cache_s)
    upstream = Upstream()
    metrics = GatewayMetrics()
    dispatcher = Dispatcher(settings, js, r, specs, upstream, metrics)
    store = CallStore(js)
    # An async call's body (and a worker's answer) is kept as one bus message, headers beside it.
    bus_bytes = min(settings.max_body_bytes, nc.max_payload - ASYNC_HEADROOM_BYTES)
    calls = CallsApi(js, store, specs, bus_bytes)
    api = HttpApi(dispatcher, keys, functions, specs, Pods(r), Nodes(r), js, settings.max_body_bytes, metrics,
                  SnapshotCatalog(r), calls, LogsApi(nc, Pods(r)))
    http_server = HttpServer(api, settings.host, settings.port)
    await http_server.start()
    nats_api = NatsApi(nc, dispatcher, keys, settings.max_body_bytes, metrics)
    stream_nc = await _stream_connection(settings)
    subs = [await nats_api.start(),
            *(await NatsStreams(stream_nc, nats_api.call, metrics).start() if stream_nc else []),
            await nc.subscribe("pod.state.*", cb=_pod_events(dispatcher)),
            await nc.subscribe(subjects.SNAPSHOT_READY.format(fn="*"), cb=_snapshot_events(metrics)),
            await nc.subscribe("fn.>", cb=_fn_events(specs))]
    consumer = await AsyncCalls(js, dispatcher, keys, specs, store, metrics, bus_bytes,
                                nc.max_payload - ASYNC_HEADROOM_BYTES, settings.async_in_flight).start()
    renewer = asyncio.create_task(_renew(dispatcher, settings.lease_ttl_s / 3))
    log.info("gateway %s listening on http://%s:%d", dispatcher.holder, settings.host, settings.port)
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        renewer.cancel()
        await run_steps(("hand running async calls back", consumer.stop),
                        *[(f"unsubscribe from {sub.subject}", sub.unsubscribe) for sub in subs],
                        ("give leased slots back", dispatcher.release_all), ("stop HTTP", http_server.stop),
                        ("close worker connections", upstream.close), ("close NATS", nc.close),
                        *([("close the stream responder's NATS", stream_nc.close)] if stream_nc else []),
                        ("close Redis", r.aclose))


async def _stream_connection(settings: GatewaySettings) -> Client | None:
    """The `infer.stream.*` responder's own connection, as the bus user `gateway-stream` (only it
    may send many answers to one request). Its credentials lie beside the gateway's (`thaw up`
    writes both); without them streams over NATS are off, and the log says how to turn them on."""
    if settings.nats_creds is None:  # an open bus
        return await bus.connect(settings.nats_url, permissions.GATEWAY_STREAM)
    path = bus_auth.credentials_path(settings.nats_creds.parent, permissions.GATEWAY_STREAM)
    if not path.exists():
        log.warning("no %s: infer.stream.* is not served; run `thaw up` again (it writes the credentials of "
                    "every bus user that is missing and the server's config for them)", path)
        return None
    return await bus.connect(settings.nats_url, permissions.GATEWAY_STREAM,
                             bus_auth.for_service(path, permissions.GATEWAY_STREAM))


def _pod_events(dispatcher: Dispatcher) -> Callable[[Msg], Awaitable[None]]:
    async def on_msg(msg: Msg) -> None:
        try:
            event = decode(msg.data, PodStateChanged)
        except DecodeError:
            return
        dispatcher.on_pod_state(event)
    return on_msg


def _snapshot_events(metrics: GatewayMetrics) -> Callable[[Msg], Awaitable[None]]:
    async def on_msg(msg: Msg) -> None:
        try:
            ready = decode(msg.data, SnapshotReady)
        except DecodeError:
            return
        metrics.snapshot.observe((ready.fn,), ready.dump_s)
    return on_msg


def _fn_events(specs: SpecCache) -> Callable[[Msg], Awaitable[None]]:
    async def on_msg(msg: Msg) -> None:
        specs.invalidate(subjects.last_token(msg.subject))
    return on_msg


async def _renew(dispatcher: Dispatcher, every_s: float) -> None:
    while True:
        await asyncio.sleep(min(every_s, 0.5))
        try:
            await dispatcher.renew_and_return()
        except Exception:
            log.exception("lease renewal failed; retrying")
