"""The HTTP bridge: invoke, function CRUD, pods and nodes, health, metrics, OpenAPI, the web
dashboard (gateway/dashboard.py), and OpenAI-style paths routed by `model`.

`gateway/http_server.py` serves it. Every request can go through `answer` (a coroutine); a warm
invoke is first offered to `answer_now`, which answers it from callbacks without a task. Every
client mistake is a 4xx with a JSON body naming the field and the reason; no client input
produces a 500.

Nodes and functions carry `status` ("ok" or "degraded") and `degraded_reason`: a node is
degraded while its last capacity report says so (e.g. its snapshotter stopped answering); a
function that snapshots is degraded while any live node is, since its pods there cold-start;
any function is degraded while it is in a crash loop (DEGRADED_AFTER pods in a row failed to
start, thaw_core/store/start_failures.py), until a pod of it gets healthy or it is redeployed.
A node an admin is draining (`POST /v1/nodes/<node>/drain`, `thaw drain`) has status
"draining" until it is undrained (`DELETE` there): it takes no new pod and placement hands its
pods over to other nodes (placement/drain.py); `pods` in its row counts those still on it.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict

import msgspec
from nats.js import JetStreamContext

from bus_schemas import subjects
from bus_schemas.codec import DecodeError, decode, encode
from bus_schemas.functions import FunctionSpec, SpecError, check_function_spec, spec_digest
from bus_schemas.functions_events import FunctionDeleted, FunctionDeployed
from bus_schemas.keys import KeyRequest
from thaw_core import bus
from thaw_core.async_queue import queued_calls
from thaw_core.clock import now_ms
from thaw_core.store.functions import FunctionOwnedElsewhere, Functions
from thaw_core.store.nodes import NodeUsage, Nodes, degraded_nodes
from thaw_core.store.pods import Pods
from thaw_core.store.snapshots import SnapshotCatalog
from thaw_core.store.start_failures import degraded_reason

from gateway import errors
from gateway import content_type as ctype
from gateway.auth import KeyCache
from gateway.calls_api import CallsApi, wants_async
from gateway.dashboard import Dashboard
from gateway.dispatcher import Dispatcher, Pending
from gateway.errors import ApiError
from gateway.http_connection import Request
from gateway.logs_api import LogsApi
from gateway.metrics import GatewayMetrics
from gateway.openapi import openapi_document
from gateway.specs import SpecCache
from gateway.upstream import StreamedBody

log = logging.getLogger(__name__)
JSON = [("content-type", "application/json")]
OPENAI_PATHS = frozenset({"/v1/embeddings", "/v1/chat/completions", "/v1/completions"})
# A node silent this long is lost, not degraded (placement's default node_timeout_s).
LIVE_NODE_S = 10.0
FAILED_SHOWN_MS = 15 * 60_000  # GET /v1/pods lists pods that failed this recently, with why

WholeResponse = tuple[int, list[tuple[str, str]], bytes]  # (status, headers, body)
Response = tuple[int, list[tuple[str, str]], bytes | StreamedBody]  # a route's: whole or streamed


def json_response(obj, status: int = 200) -> WholeResponse:
    return status, JSON, encode(obj)


def error_response(err: ApiError) -> WholeResponse:
    headers = list(JSON)
    if err.retry_after_s:
        headers.append(("retry-after", str(max(1, round(err.retry_after_s)))))
    return err.status, headers, encode(err.body())


class HttpApi:
    def __init__(self, dispatcher: Dispatcher, keys: KeyCache, functions: Functions, specs: SpecCache, pods: Pods,
                 nodes: Nodes, js: JetStreamContext, max_body_bytes: int, metrics: GatewayMetrics,
                 snapshots: SnapshotCatalog | None = None, calls: CallsApi | None = None,
                 logs: LogsApi | None = None) -> None:
        self.d, self.keys, self.functions, self.specs = dispatcher, keys, functions, specs
        self.pods, self.nodes, self.js, self.snapshots = pods, nodes, js, snapshots
        self.calls = calls  # async calls; None: not served by this gateway (503)
        self.logs = logs  # workers' logs through their agents; None: not served (503)
        self.max_body_bytes, self.metrics = max_body_bytes, metrics
        self._openapi = encode(openapi_document())
        self.dashboard = Dashboard(self)

    async def answer(self, request: Request) -> None:
        """Answer any request (a `gateway.http_connection.Request`)."""
        try:
            status, headers, body = await self._route(request)
        except ApiError as err:
            status, headers, body = error_response(err)
        except ConnectionError as exc:
            log.info("%s %s: %s", request.method, request.path, exc)
            return
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            status, headers, body = error_response(ApiError(500, "internal", "the gateway failed; see its log"))
        if isinstance(body, StreamedBody):
            await _pass_stream(request, status, headers, body)
        else:
            request.response_bytes(status, headers, body)

    def answer_now(self, request: Request, done: Callable[[Request], None]) -> bool:
        """Answer a warm invoke from callbacks, without a task, when all it needs is at hand (the
        caller's key cached, the whole body read, a free slot with an idle connection): the common
        case on a busy gateway, where a task and its coroutines per call cost about as much CPU as
        the bytes it moves. True: `done(request)` is called once the answer is sent. False: the
        request goes to `answer`, which answers every case."""
        path = request.path
        if (request.method != "POST" or not path.startswith("/v1/functions/") or not path.endswith("/invoke")
                or request.query_string):  # ?async=1 and the like: the general path reads the query
            return False
        fn = path[14:-7]
        headers = request.headers
        tenant = self.keys.peek(headers.get("authorization"))
        body = request.body_now()
        sent_type = headers.get("content-type", ctype.DEFAULT)
        if tenant is None or body is None or "/" in fn or len(body) > self.max_body_bytes or not ctype.fits(sent_type):
            return False
        pending = self.d.start_now(tenant, fn, body, sent_type, self._answer_started, (request, done))
        return pending is not None

    def _answer_started(self, pending: Pending) -> None:
        request, done = pending.ctx
        try:
            reply = self.d.finish_now(pending)
            if reply is None:  # never reached the worker: the general path tries another
                _run_then(self.answer(request), request, done)
                return
            self.metrics.count_call(pending.fn, "http", reply.status)
            headers = [("content-type", reply.content_type), ("thaw-pod", reply.pod)]
            if reply.stream is not None:
                _run_then(_pass_stream(request, reply.status, headers, reply.stream), request, done)
                return
            request.response_bytes(reply.status, headers, reply.body)
        except ApiError as err:
            self.metrics.count_call(pending.fn, "http", err.status)
            request.response_bytes(*error_response(err))
        except Exception:
            log.exception("POST %s failed", request.path)
            request.response_bytes(*error_response(ApiError(500, "internal", "the gateway failed; see its log")))
        done(request)

    async def _route(self, request) -> Response:
        method, path = request.method, request.path
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["v1", "functions"] and parts[3] == "invoke":
            _allow(method, "POST")
            return await self.invoke(request, parts[2])
        if parts[:2] in (["v1", "calls"], ["v1", "dlq"]):
            return await self._calls_route(request, method, parts[1:])
        if len(parts) == 4 and parts[:2] == ["v1", "functions"] and parts[3] == "logs":
            _allow(method, "GET")
            return await self.read_logs(request, parts[2])
        if path in OPENAI_PATHS:
            _allow(method, "POST")
            return await self.openai(request)
        if path == "/v1/keys":
            _allow(method, "POST")
            return await self.create_key(request)
        if path == "/v1/functions":
            _allow(method, "GET", "POST")
            return await (self.deploy(request) if method == "POST" else self.list_functions(request))
        if len(parts) == 3 and parts[:2] == ["v1", "functions"]:
            _allow(method, "GET", "DELETE")
            name = parts[2]
            return await (self.get_function(request, name) if method == "GET" else self.delete_function(request, name))
        if len(parts) == 4 and parts[:2] == ["v1", "nodes"] and parts[3] == "drain":
            _allow(method, "POST", "DELETE")
            return await self.drain_node(request, parts[2], draining=method == "POST")
        simple = {"/healthz": self.healthz, "/metrics": self.metrics_text, "/openapi.json": self.openapi,
                  "/v1/pods": self.list_pods, "/v1/nodes": self.list_nodes, "/v1/snapshots": self.list_snapshots,
                  "/dashboard": self.dashboard.page, "/v1/dashboard": self.dashboard.state}
        if path in simple:
            _allow(method, "GET")
            return await simple[path](request)
        raise ApiError(404, "not_found", f"no such path {path!r}; see GET /openapi.json")

    async def _calls_route(self, request, method: str, parts: list[str]) -> Response:
        """/v1/calls, /v1/calls/<id>, /v1/dlq, /v1/dlq/redrive (gateway/calls_api.py)."""
        if parts == ["dlq", "redrive"]:
            _allow(method, "POST")
            tenant = await self._tenant(request)
            return json_response(await self._calls().redrive(tenant, await self._body(request)))
        if len(parts) > 2 or (parts[0] == "dlq" and len(parts) > 1):
            raise ApiError(404, "not_found", f"no such path {request.path!r}; see GET /openapi.json")
        _allow(method, "GET")
        tenant = await self._tenant(request)
        calls = self._calls()
        if parts == ["dlq"]:
            return json_response(await calls.list_dlq(tenant, request))
        if len(parts) == 2:
            return json_response(await calls.get_call(tenant, parts[1]))
        return json_response(await calls.list_calls(tenant, request))

    def _calls(self) -> CallsApi:
        if self.calls is None:
            raise ApiError(503, "async_unavailable", "this gateway does not serve async calls")
        return self.calls

    async def _tenant(self, request, headers=None) -> str:
        return await self.keys.tenant((headers or request.headers).get("authorization"))

    async def _body(self, request, headers=None) -> bytes:
        """The request body, refused with 413 past max_body_bytes (without reading it all)."""
        declared = (headers or request.headers).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            raise self._too_large()
        if declared is not None:
            return await request()
        chunks, size = [], 0
        async for chunk in request:
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> ApiError:
        return ApiError(413, "body_too_large", f"request body is over {self.max_body_bytes} bytes; "
                                               "send less or raise the gateway's max_body_bytes")

    async def healthz(self, request) -> Response:
        return json_response({"status": "ok"})

    async def metrics_text(self, request) -> Response:
        """Metrics of the caller's functions only: labels name functions, which are tenant data."""
        specs = await self.specs_of(await self._tenant(request))
        nodes = await self.nodes.all()
        live = degraded_nodes(nodes, now_ms(), LIVE_NODE_S)
        loops = await self._crash_loops(specs)
        names = {s.name for s in specs}
        pods = [p for p in await self.pods.live() if p.fn in names]
        queued = await _queued_or_none(self.js)
        # Observed and rendered with no await between: a concurrent scrape cannot interleave.
        self.metrics.observe_fleet(pods, nodes, names)
        self.metrics.observe_pools(self.d.pools)
        self.metrics.observe_async_queue(queued, names)
        self.metrics.observe_health({n.name: bool(n.degraded) for n in nodes},
                                    {s.name: bool(function_degraded(s, live, loops.get(s.name, ""))) for s in specs})
        body, content_type = self.metrics.render(names)
        return 200, [("content-type", content_type)], body

    async def openapi(self, request) -> Response:
        return 200, JSON, self._openapi

    async def invoke(self, request, fn: str) -> Response:
        headers = request.headers  # built from Rust on each access: read it once on the hot path
        tenant = await self._tenant(request, headers)
        run_async = wants_async(request) if request.query_string else False
        body = await self._body(request, headers)
        if run_async:
            status, answer = await self._calls().invoke_async(tenant, fn, body,
                                                              ctype.checked(headers.get("content-type")))
            return json_response(answer, status=status)
        try:
            reply = await self.d.invoke(tenant, fn, body, ctype.checked(headers.get("content-type")))
        except ApiError as err:
            self.metrics.count_call(fn, "http", err.status)
            raise
        self.metrics.count_call(fn, "http", reply.status)
        return reply.status, [("content-type", reply.content_type), ("thaw-pod", reply.pod)], reply.stream or reply.body

    async def openai(self, request) -> Response:
        """OpenAI-compatible paths: the `model` field names the function; the body goes as is."""
        tenant = await self._tenant(request)
        body = await self._body(request)
        try:
            model = msgspec.json.decode(body, type=dict).get("model")
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise ApiError(400, "invalid_json", f"body is not a JSON object: {exc}", field="$") from None
        if not isinstance(model, str) or not model:
            raise ApiError(400, "invalid_field", "`model` must name a deployed function", field="$.model")
        reply = await self.d.invoke(tenant, model, body, "application/json", path=request.path)
        self.metrics.count_call(model, "http", reply.status)
        return reply.status, [("content-type", reply.content_type), ("thaw-pod", reply.pod)], reply.stream or reply.body

    async def create_key(self, request) -> Response:
        tenant = await self.keys.admin_tenant(request.headers.get("authorization"), "making keys")
        body = await self._body(request)
        try:
            asked = decode(body or b"{}", KeyRequest)
        except DecodeError as exc:
            raise ApiError(400, "invalid_field", f"{exc.field}: {exc.reason}", field=exc.field) from None
        key = await self.keys.create(tenant, asked.role, asked.rate_per_s)
        return json_response({"key": key, "tenant": tenant, "role": asked.role, "rate_per_s": asked.rate_per_s},
                             status=201)

    async def deploy(self, request) -> Response:
        tenant = await self.keys.admin_tenant(request.headers.get("authorization"), "deploying")
        spec = self._parse_spec(await self._body(request), tenant)
        try:
            revision = await self.functions.put(spec)
        except FunctionOwnedElsewhere:
            raise ApiError(409, "name_taken", f"a function named {spec.name!r} belongs to another tenant; "
                                              "choose another name", field="$.name") from None
        self.specs.invalidate(spec.name)
        event = FunctionDeployed(spec=spec, revision=revision, at_ms=now_ms())
        await bus.publish(self.js, subjects.fn_deployed(spec.name), event, msg_id=f"deploy:{spec.name}:{revision}")
        return json_response({"function": spec, "revision": revision}, status=201)

    def _parse_spec(self, body: bytes, tenant: str) -> FunctionSpec:
        try:
            spec = check_function_spec(decode(body, FunctionSpec))
        except (DecodeError, SpecError) as exc:
            raise ApiError(400, "invalid_field", f"{exc.field}: {exc.reason}", field=exc.field) from None
        if spec.tenant not in ("default", tenant):
            raise ApiError(403, "wrong_tenant", "`tenant` must be your key's tenant or left out", field="$.tenant")
        return msgspec.structs.replace(spec, tenant=tenant)

    async def list_functions(self, request) -> Response:
        specs = await self.specs_of(await self._tenant(request))
        return json_response({"functions": await self.function_rows(specs, await self.nodes.all())})

    async def specs_of(self, tenant: str) -> list[FunctionSpec]:
        return [s for s in await self.functions.all() if s.tenant == tenant]

    async def function_rows(self, specs: list[FunctionSpec], nodes: list[NodeUsage]) -> list[dict]:
        """`specs` as listed, each with its status and degraded reason (from `nodes`, all of them)."""
        live = degraded_nodes(nodes, now_ms(), LIVE_NODE_S)
        loops = await self._crash_loops(specs)
        return [_function_row(s, live, loops.get(s.name, "")) for s in specs]

    async def _live_degraded(self) -> dict[str, str]:
        return degraded_nodes(await self.nodes.all(), now_ms(), LIVE_NODE_S)

    async def _crash_loops(self, specs: list[FunctionSpec]) -> dict[str, str]:
        """Function name -> why it is in a crash loop, for those that are."""
        out = {}
        for spec in specs:
            why = degraded_reason(await self.d.start_failures.get(spec.name), spec_digest(spec))
            if why:
                out[spec.name] = why
        return out

    async def _own_function(self, request, name: str) -> FunctionSpec:
        tenant = await self._tenant(request)
        spec = await self.functions.get(name)
        if spec is None or spec.tenant != tenant:
            raise errors.unknown_function(name)
        return spec

    async def read_logs(self, request, name: str) -> Response:
        """A chunk of the log of one of the caller's function's pods (gateway/logs_api.py)."""
        await self._own_function(request, name)
        if self.logs is None:
            raise ApiError(503, "unavailable", "this gateway does not serve logs; ask another")
        return json_response(await self.logs.read(name, request.query_string or ""))

    async def get_function(self, request, name: str) -> Response:
        """The function, its status, and why its last snapshot failed (`snapshot_failure`,
        null when none did since its last snapshot)."""
        spec = await self._own_function(request, name)
        loops = await self._crash_loops([spec])
        row = _function_row(spec, await self._live_degraded(), loops.get(spec.name, ""))
        failure = await self.snapshots.last_failure(name) if self.snapshots is not None else None
        row["snapshot_failure"] = msgspec.to_builtins(failure) if failure is not None else None
        return json_response({"function": row})

    async def delete_function(self, request, name: str) -> Response:
        await self._own_function(request, name)
        await self.keys.admin_tenant(request.headers.get("authorization"), "deleting a function")
        await self.functions.delete(name)
        self.specs.invalidate(name)
        await bus.publish(self.js, subjects.fn_deleted(name), FunctionDeleted(fn=name, at_ms=now_ms()),
                          msg_id=f"delete:{name}:{now_ms()}")
        return json_response({"deleted": name})

    async def list_pods(self, request) -> Response:
        mine = {s.name for s in await self.specs_of(await self._tenant(request))}
        return json_response(await self.pod_rows(mine))

    async def pod_rows(self, fns: set[str]) -> dict[str, list[dict]]:
        """{"pods": the live pods of `fns`, "failed": theirs that failed recently, with why}."""
        failed = await self.pods.recent_failures(now_ms() - FAILED_SHOWN_MS)
        return {"pods": [msgspec.to_builtins(p) for p in await self.pods.live() if p.fn in fns],
                "failed": [msgspec.to_builtins(p) for p in failed if p.fn in fns]}

    async def list_snapshots(self, request) -> Response:
        """Snapshots of the caller's functions (size, tiers, node, created_ms), read from Redis."""
        mine = {s.name for s in await self.specs_of(await self._tenant(request))}
        return json_response({"snapshots": await self.snapshot_rows(mine)})

    async def snapshot_rows(self, fns: set[str]) -> list[dict]:
        found = await self.snapshots.all() if self.snapshots is not None else []
        return [msgspec.to_builtins(s) for s in found if s.fn in fns]

    async def list_nodes(self, request) -> Response:
        await self._tenant(request)
        return json_response({"nodes": self.node_rows(await self.nodes.all(), await self.pods_per_node())})

    async def drain_node(self, request, node: str, draining: bool) -> Response:
        """Drain `node` (or stop draining it): an admin's, for the whole fleet. Answers the node's
        name, whether it is draining, and how many pods are still on it."""
        await self.keys.admin_tenant(request.headers.get("authorization"),
                                     "draining a node" if draining else "undraining a node")
        if not await self.nodes.set_draining(node, draining, now_ms()):
            raise ApiError(404, "unknown_node", f"no node named {node!r}; `thaw ls` (GET /v1/nodes) lists them")
        pods = (await self.pods_per_node()).get(node, 0)
        return json_response({"node": node, "draining": draining, "pods": pods})

    async def pods_per_node(self) -> dict[str, int]:
        """Node -> its live pods, every tenant's (a count only: no function is named)."""
        out: dict[str, int] = {}
        for p in await self.pods.live():
            out[p.node] = out.get(p.node, 0) + 1
        return out

    @staticmethod
    def node_rows(nodes: list[NodeUsage], pods: dict[str, int] | None = None) -> list[dict]:
        """Nodes as listed: totals, per-GPU vRAM reserved, status ("ok", "degraded" or
        "draining"), degraded reason, and (with `pods`, node -> count) the pods on each."""
        return [_node_row(n, (pods or {}).get(n.name, 0)) for n in nodes]


def function_degraded(spec: FunctionSpec, live_degraded: dict[str, str], crash_loop: str = "") -> str:
    """Why `spec` is degraded, "" when it is not: its crash loop (`crash_loop`, from
    start_failures.degraded_reason), and, for a function that snapshots, each degraded live node,
    where its new pods cold-start instead of restoring."""
    nodes = [f"node {node} degraded: {why}" for node, why in sorted(live_degraded.items())] if spec.snapshot else []
    return "; ".join(r for r in [crash_loop, *nodes] if r)


def _status(reason: str) -> dict:
    return {"status": "degraded" if reason else "ok", "degraded_reason": reason}


def _function_row(spec: FunctionSpec, live_degraded: dict[str, str], crash_loop: str = "") -> dict:
    return {**msgspec.to_builtins(spec), **_status(function_degraded(spec, live_degraded, crash_loop))}


def _node_row(n: NodeUsage, pods: int = 0) -> dict:
    row = asdict(n)
    reason = row.pop("degraded")
    status = _status(reason)
    if n.draining:  # what an operator asked for shows first; a degraded reason stays listed
        status["status"] = "draining"
    return {**row, **status, "draining": n.draining, "pods": pods}


async def _pass_stream(request, status: int, headers: list, body: StreamedBody) -> None:
    """Forward a streamed answer chunk by chunk; a worker or client that breaks off ends it."""
    transport = request.response_stream(status, headers)
    try:
        async for chunk in body:
            await transport.send_bytes(chunk)
        transport.end()
    except (ConnectionError, TimeoutError, OSError) as exc:
        log.info("stream ended early: %s", exc)
    finally:
        body.close()


def _run_then(coro, request, done) -> None:
    """Finish answering `request` in a task, then tell the connection."""
    asyncio.get_running_loop().create_task(coro).add_done_callback(lambda _: done(request))


async def _queued_or_none(js) -> dict[str, int] | None:
    """Async calls queued per function; None while JetStream cannot say (a scrape still answers)."""
    try:
        return await queued_calls(js)
    except Exception as exc:
        log.info("async queue depth unknown for this scrape: %s", exc)
        return None


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed here; use {' or '.join(allowed)}")
