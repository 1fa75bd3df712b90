"""The HTTP bridge: invoke, function CRUD, pods and nodes, health, OpenAI-style paths.

Every client mistake is a 4xx with a JSON body naming the field and the reason; no client input
can produce a 500.
"""

import logging
from dataclasses import asdict

import msgspec
from aiohttp import web

from bus_schemas import subjects
from bus_schemas.codec import DecodeError, decode, encode
from bus_schemas.functions import FunctionSpec, SpecError, check_function_spec
from bus_schemas.functions_events import FunctionDeleted, FunctionDeployed
from thaw_core import bus
from thaw_core.clock import now_ms
from thaw_core.store.functions import FunctionOwnedElsewhere, Functions
from thaw_core.store.nodes import Nodes
from thaw_core.store.pods import Pods

from gateway import errors
from gateway.auth import KeyCache
from gateway.dispatcher import Dispatcher
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics
from gateway.openapi import openapi_document
from gateway.specs import SpecCache

log = logging.getLogger(__name__)
JSON = "application/json"
MAX_BODY = web.AppKey("max_body_bytes", int)
OPENAI_PATHS = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")


def json_response(obj, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=encode(obj), content_type=JSON, headers=headers)


def error_response(err: ApiError) -> web.Response:
    headers = {"Retry-After": f"{max(1, round(err.retry_after_s))}"} if err.retry_after_s else None
    return json_response(err.body(), err.status, headers)


@web.middleware
async def errors_as_json(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY]
        return error_response(ApiError(413, "body_too_large", f"request body is over {limit} bytes; "
                                                               "send less or raise the gateway's max_body_bytes"))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(ApiError(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason))
        raise


class HttpApi:
    def __init__(self, dispatcher: Dispatcher, keys: KeyCache, functions: Functions, specs: SpecCache,
                 pods: Pods, nodes: Nodes, js, max_body_bytes: int, metrics: GatewayMetrics):
        self.d, self.keys, self.functions, self.specs = dispatcher, keys, functions, specs
        self.metrics = metrics
        self._openapi = openapi_document()
        self.pods, self.nodes, self.js = pods, nodes, js
        self.max_body_bytes = max_body_bytes

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_as_json], client_max_size=self.max_body_bytes)
        app[MAX_BODY] = self.max_body_bytes
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_post("/v1/functions/{name}/invoke", self.invoke)
        app.router.add_post("/v1/functions", self.deploy)
        app.router.add_get("/v1/functions", self.list_functions)
        app.router.add_get("/v1/functions/{name}", self.get_function)
        app.router.add_delete("/v1/functions/{name}", self.delete_function)
        app.router.add_get("/v1/pods", self.list_pods)
        app.router.add_get("/v1/nodes", self.list_nodes)
        for path in OPENAI_PATHS:
            app.router.add_post(path, self.openai)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Metrics of the caller's functions only: labels name functions, which are tenant data."""
        tenant = await self.keys.tenant(request.headers.get("Authorization"))
        self.metrics.observe_pools(self.d.pools)
        mine = {s.name for s in await self.functions.all() if s.tenant == tenant}
        body, content_type = self.metrics.render(mine)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(self._openapi)

    async def invoke(self, request: web.Request) -> web.Response:
        tenant = await self.keys.tenant(request.headers.get("Authorization"))
        body = await request.read()
        fn = request.match_info["name"]
        try:
            reply = await self.d.invoke(tenant, fn, body, request.headers.get("Content-Type", "application/octet-stream"))
        except ApiError as err:
            self.metrics.calls.labels(fn, "http", str(err.status)).inc()
            raise
        self.metrics.calls.labels(fn, "http", str(reply.status)).inc()
        return web.Response(status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type,
                                                                           "Thaw-Pod": reply.pod})

    async def openai(self, request: web.Request) -> web.Response:
        """OpenAI-compatible paths: the `model` field names the function; the body goes as is."""
        tenant = await self.keys.tenant(request.headers.get("Authorization"))
        body = await request.read()
        try:
            model = msgspec.json.decode(body, type=dict).get("model")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ApiError(400, "invalid_json", f"body is not a JSON object: {exc}", field="$") from None
        if not isinstance(model, str) or not model:
            raise ApiError(400, "invalid_field", "`model` must name a deployed function", field="$.model")
        reply = await self.d.invoke(tenant, model, body, JSON, path=request.path)
        return web.Response(status=reply.status, body=reply.body, headers={"Content-Type": reply.content_type,
                                                                           "Thaw-Pod": reply.pod})

    async def deploy(self, request: web.Request) -> web.Response:
        tenant = await self.keys.tenant(request.headers.get("Authorization"))
        spec = self._parse_spec(await request.read(), tenant)
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
        except DecodeError as exc:
            raise ApiError(400, "invalid_field", f"{exc.field}: {exc.reason}", field=exc.field) from None
        except SpecError as exc:
            raise ApiError(400, "invalid_field", f"{exc.field}: {exc.reason}", field=exc.field) from None
        if spec.tenant not in ("default", tenant):
            raise ApiError(403, "wrong_tenant", "`tenant` must be your key's tenant or left out", field="$.tenant")
        return msgspec.structs.replace(spec, tenant=tenant)

    async def list_functions(self, request: web.Request) -> web.Response:
        tenant = await self.keys.tenant(request.headers.get("Authorization"))
        return json_response({"functions": [s for s in await self.functions.all() if s.tenant == tenant]})

    async def get_function(self, request: web.Request) -> web.Response:
        tenant = await self.keys.tenant(request.headers.get("Authorization"))
        spec = await self.functions.get(request.match_info["name"])
        if spec is None or spec.tenant != tenant:
            raise errors.unknown_function(request.match_info["name"])
        return json_response({"function": spec})

    async def delete_function(self, request: web.Request) -> web.Response:
        tenant = await self.keys.tenant(request.headers.get("Authorization"))
        name = request.match_info["name"]
        spec = await self.functions.get(name)
        if spec is None or spec.tenant != tenant:
            raise errors.unknown_function(name)
        await self.functions.delete(name)
        self.specs.invalidate(name)
        await bus.publish(self.js, subjects.fn_deleted(name), FunctionDeleted(fn=name, at_ms=now_ms()),
                          msg_id=f"delete:{name}:{now_ms()}")
        return json_response({"deleted": name})

    async def list_pods(self, request: web.Request) -> web.Response:
        tenant = await self.keys.tenant(request.headers.get("Authorization"))
        mine = {s.name for s in await self.functions.all() if s.tenant == tenant}
        pods = [asdict(p) for p in await self.pods.live() if p.fn in mine]
        return json_response({"pods": pods})

    async def list_nodes(self, request: web.Request) -> web.Response:
        await self.keys.tenant(request.headers.get("Authorization"))
        return json_response({"nodes": [asdict(n) for n in await self.nodes.all()]})
