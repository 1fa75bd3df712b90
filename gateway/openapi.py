"""The OpenAPI document of the HTTP bridge, generated from the bus schemas it accepts."""

import msgspec

from bus_schemas.errors import ErrorBody
from bus_schemas.functions import FunctionSpec

_BEARER: list[dict[str, list[str]]] = [{"apiKey": []}]


def _errors(*codes: int) -> dict:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    return {str(c): {"description": d, **ref} for c, d in
            {400: "invalid input: the body names the field and the reason", 401: "missing or unknown API key",
             403: "this key's role may not do this (deploy, delete, key creation and the dashboard need an admin key)",
             404: "unknown function", 409: "the name belongs to another tenant", 413: "body too large",
             429: "queue full, or the key's rate spent; retry after Retry-After", 503: "no worker within the start deadline",
             504: "worker did not answer in time"}.items() if c in codes}


def openapi_document() -> dict:
    _, components = msgspec.json.schema_components([FunctionSpec, ErrorBody],
                                                   ref_template="#/components/schemas/{name}")
    spec_body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/FunctionSpec"}}}}
    raw = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Thaw gateway", "version": "1"},
        "components": {"schemas": components,
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": _BEARER,
        "paths": {
            "/healthz": {"get": {"security": [], "responses": {"200": {"description": "up"}}}},
            "/v1/functions": {
                "get": {"summary": "list your functions", "responses": {"200": {"description": "functions"},
                                                                        **_errors(401)}},
                "post": {"summary": "deploy (create or replace) a function", "requestBody": spec_body,
                         "responses": {"201": {"description": "deployed"}, **_errors(400, 401, 403, 409, 413)}},
            },
            "/v1/functions/{name}": {
                "parameters": name,
                "get": {"responses": {"200": {"description": "the function"}, **_errors(401, 404)}},
                "delete": {"responses": {"200": {"description": "deleted; its pods drain"},
                                         **_errors(401, 403, 404)}},
            },
            "/v1/keys": {"post": {
                "summary": "make a key for your tenant (admin keys only); the key is shown once",
                "requestBody": {"content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"role": {"enum": ["admin", "invoker"], "default": "invoker"},
                                   "rate_per_s": {"type": "number", "minimum": 0, "default": 0}}}}}},
                "responses": {"201": {"description": "{\"key\": ..., \"tenant\": ..., \"role\": ...}"},
                              **_errors(400, 401, 403)}}},
            "/v1/functions/{name}/invoke": {
                "parameters": [*name, {"name": "async", "in": "query", "required": False,
                                       "schema": {"enum": ["1", "true", "0", "false"]},
                                       "description": "1: queue the call and answer 202 {call_id, status} at once"}],
                "post": {"summary": "invoke: the body goes to the worker as is, its answer comes back as is",
                         "requestBody": raw, "responses": {"200": {"description": "the worker's answer", **raw},
                                                           "202": {"description": "queued (?async=1): "
                                                                   "{\"call_id\": ..., \"status\": \"queued\"}"},
                                                           **_errors(400, 401, 404, 413, 429, 503, 504)}},
            },
            "/v1/functions/{name}/logs": {"get": {
                "summary": "a chunk of a worker's log, read by its node's agent: ?pod= (default: the newest pod, "
                           "live or failed in the last 15 minutes), ?offset= (bytes; negative counts from the end; "
                           "default -65536), ?max_bytes= (1-262144); ask again from next_offset to follow",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "{\"pod\", \"node\", \"state\", \"offset\", "
                                                     "\"next_offset\", \"size\", \"shared_with\", \"text\"}"},
                              **_errors(400, 401, 404, 503, 504)}}},
            "/v1/calls": {"get": {
                "summary": "your recent async calls, newest first (?fn=, ?state=queued|running|succeeded|failed|dead, "
                           "?limit=1-1000)", "responses": {"200": {"description": "{\"calls\": [...]}"},
                                                           **_errors(400, 401)}}},
            "/v1/calls/{id}": {"get": {
                "summary": "one async call: status, attempts, http_status, result (text or base64), error, times",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the call"}, **_errors(401, 404)}}},
            "/v1/dlq": {"get": {"summary": "your dead async calls (?fn=)",
                                "responses": {"200": {"description": "{\"dead\": [...]}"}, **_errors(400, 401)}}},
            "/v1/dlq/redrive": {"post": {
                "summary": "queue dead calls again, attempts reset: {\"fn\": ...} or {\"ids\": [...]}",
                "responses": {"200": {"description": "{\"redriven\": [...], \"not_found\": [...]}"},
                              **_errors(400, 401, 503)}}},
            "/v1/embeddings": {"post": {"summary": "OpenAI-style; `model` names the function",
                                        "responses": {"200": {"description": "the worker's answer"},
                                                      **_errors(400, 401, 404, 429, 503)}}},
            "/v1/pods": {"get": {"responses": {"200": {"description": "your live pods, and those that failed in the last 15 minutes with why"}}}},
            "/v1/nodes": {"get": {"responses": {"200": {"description": "nodes with per-GPU vRAM, status (ok, "
                                                                       "degraded, draining) and pods on each"}}}},
            "/v1/nodes/{node}/drain": {
                "post": {"summary": "drain the node (admin): it takes no new pod, and its pods are replaced on "
                                    "other nodes, then stopped",
                         "responses": {"200": {"description": "{\"node\", \"draining\": true, \"pods\": left on it}"},
                                       **_errors(401, 403, 404)}},
                "delete": {"summary": "stop draining the node (admin)",
                           "responses": {"200": {"description": "{\"node\", \"draining\": false, \"pods\"}"},
                                         **_errors(401, 403, 404)}}},
            "/v1/snapshots": {"get": {"responses": {"200": {"description": "snapshots of your functions: "
                                                                           "size, tiers, node, created_ms"}}}},
            "/dashboard": {"get": {"security": [], "summary": "the live web dashboard: one self-contained page that "
                                   "asks for an admin key and polls GET /v1/dashboard with it",
                                   "responses": {"200": {"description": "HTML",
                                                         "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/v1/dashboard": {"get": {
                "summary": "everything the dashboard shows, for your tenant (admin keys only): functions, pods and "
                           "failed pods, nodes with per-GPU vRAM, this gateway's last calls (seconds to first answer, "
                           "start warm, restored or cold), snapshots, dead async calls",
                "responses": {"200": {"description": "{\"tenant\", \"at_ms\", \"functions\", \"pods\", "
                                                     "\"failed\", \"nodes\", \"latencies\", \"snapshots\", "
                                                     "\"dead\", \"dlq_served\"}"},
                              **_errors(401, 403)}}},
            "/metrics": {"get": {"summary": "Prometheus text, your functions' samples only",
                                 "responses": {"200": {"description": "Prometheus text"}, **_errors(401)}}},
        },
    }
