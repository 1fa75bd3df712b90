"""The gateway's REST API as pure functions: each call builds a `Request` (method, path with its
query, body) that carries how to decode its `Answer` into a typed result or a ThawError. No I/O
here: `thaw.Client` (urllib) and `thaw.AsyncClient` (aiohttp) only move the bytes.
"""

import os
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

from thaw import types as T
from thaw.errors import BadAnswer, BadFunctionFile, ThawError, refusal

R = TypeVar("R")
S = TypeVar("S")
JSON_TYPE = "application/json"
LOG_CHUNK_BYTES = 256 * 1024  # the most the gateway gives per ask
SERVED = ("warm", "restored", "cold")


class Headers(Mapping[str, str]):
    """Response headers, looked up case-insensitively; a repeated header's values joined by ", "."""

    __slots__ = ("_by_name",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self._by_name: dict[str, str] = {}
        for name, value in items:
            name = name.lower()
            have = self._by_name.get(name)
            self._by_name[name] = value if have is None else f"{have}, {value}"

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def __iter__(self):
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Headers({self._by_name!r})"


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: status, headers (case-insensitive), body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Request(Generic[R]):
    method: str
    path: str  # with its query string
    decode: Callable[[Answer], R]
    body: bytes | None = None
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def sent_bytes(self) -> int:
        return len(self.body or b"")


class Api:
    """Requests for one gateway. `url` and `key_source` only shape error messages (a 401 names
    where the key came from)."""

    def __init__(self, url: str, key_source: str = ""):
        self.url, self.key_source = url.rstrip("/"), key_source

    # -- functions

    def deploy(self, spec: Any) -> Request[T.Deployment]:
        """`spec`: a bus_schemas FunctionSpec, a dict of its fields, or a Function (as listed)."""
        if isinstance(spec, T.Function):
            spec = {k: v for k, v in msgspec.to_builtins(spec).items() if k not in ("status", "degraded_reason")}
        return self._json("POST", "/v1/functions", T.Deployment, spec)

    def functions(self) -> Request[list[T.Function]]:
        return self._json("GET", "/v1/functions", T.FunctionsList, then=lambda x: x.functions)

    def function(self, name: str) -> Request[T.Function]:
        return self._json("GET", f"/v1/functions/{_seg(name)}", T.FunctionOne, then=lambda x: x.function)

    def delete(self, name: str) -> Request[str]:
        return self._json("DELETE", f"/v1/functions/{_seg(name)}", T.Deleted, then=lambda x: x.deleted)

    # -- calls

    def invoke(self, name: str, data: bytes, content_type: str) -> Request[T.InvokeResult]:
        sent = len(data)

        def decode(a: Answer) -> T.InvokeResult:
            pod = a.headers.get("thaw-pod", "")
            if a.status >= 400 and not pod:  # the gateway's own refusal: no worker saw the call
                raise self.refused(a, sent)
            served = a.headers.get("thaw-start", "").lower()
            return T.InvokeResult(status=a.status, body=a.body, headers=a.headers, pod=pod,
                                  served=served if served in SERVED else None)  # type: ignore[arg-type]

        return Request("POST", f"/v1/functions/{_seg(name)}/invoke", decode, data, content_type)

    def invoke_async(self, name: str, data: bytes, content_type: str) -> Request[str]:
        path = f"/v1/functions/{_seg(name)}/invoke?async=1"
        decode = self._decoder(path, T.Queued, len(data), lambda q: q.call_id, ok=(202,))
        return Request("POST", path, decode, data, content_type)

    def get_call(self, call_id: str) -> Request[T.Call]:
        return self._json("GET", f"/v1/calls/{_seg(call_id)}", T.Call)

    def list_calls(self, fn: str = "", state: str = "", limit: int | None = None) -> Request[list[T.Call]]:
        query = _query(fn=fn, state=state, limit=limit)
        return self._json("GET", f"/v1/calls{query}", T.CallsList, then=lambda x: x.calls)

    def dlq(self, fn: str = "") -> Request[list[T.DeadCall]]:
        return self._json("GET", f"/v1/dlq{_query(fn=fn)}", T.DeadList, then=lambda x: x.dead)

    def redrive(self, fn: str = "", ids: Iterable[str] = ()) -> Request[T.Redriven]:
        ids = list(ids)
        return self._json("POST", "/v1/dlq/redrive", T.Redriven, {"ids": ids} if ids else {"fn": fn})

    # -- the fleet

    def pods(self) -> Request[T.PodList]:
        return self._json("GET", "/v1/pods", T.PodList)

    def nodes(self) -> Request[list[T.Node]]:
        return self._json("GET", "/v1/nodes", T.NodesList, then=lambda x: x.nodes)

    def drain(self, node: str) -> Request[T.Drain]:
        """Drain `node` (an admin key): it takes no new pod, its pods move to other nodes."""
        return self._json("POST", f"/v1/nodes/{_seg(node)}/drain", T.Drain)

    def undrain(self, node: str) -> Request[T.Drain]:
        return self._json("DELETE", f"/v1/nodes/{_seg(node)}/drain", T.Drain)

    def snapshots(self) -> Request[list[T.Snapshot]]:
        return self._json("GET", "/v1/snapshots", T.SnapshotsList, then=lambda x: x.snapshots)

    def logs(self, fn: str, pod: str = "", offset: int | None = None,
             max_bytes: int | None = None) -> Request[T.LogChunk]:
        """A chunk of the log of `fn`'s `pod` (default: its newest) from `offset` (negative: from
        the end; default: the last 64 KiB)."""
        query = _query(pod=pod, offset=offset, max_bytes=max_bytes)
        return self._json("GET", f"/v1/functions/{_seg(fn)}/logs{query}", T.LogChunk)

    def logs_after(self, fn: str, chunk: T.LogChunk) -> Request[T.LogChunk]:
        """The next chunk of the same pod's log."""
        return self.logs(fn, chunk.pod, chunk.next_offset, LOG_CHUNK_BYTES)

    # -- keys

    def create_key(self, role: str = "invoker", rate_per_s: float = 0.0) -> Request[T.ApiKey]:
        return self._json("POST", "/v1/keys", T.ApiKey, {"role": role, "rate_per_s": rate_per_s})

    def healthz(self) -> Request[bool]:
        return Request("GET", "/healthz", lambda a: a.status == 200)

    def raw(self, method: str, path: str, body: bytes | None = None,
            content_type: str = JSON_TYPE) -> Request[Answer]:
        """Any path, the answer as it came (no error raised for a 4xx or 5xx)."""
        return Request(method, path, lambda a: a, body, content_type)

    # -- decoding

    def refused(self, a: Answer, sent_bytes: int) -> ThawError:
        return refusal(a.status, a.body, self.url, sent_bytes, self.key_source)

    def _json(self, method: str, path: str, kind: type[S], obj: Any = None,
              then: Callable[[S], R] | None = None) -> Request:
        body = None if obj is None else msgspec.json.encode(obj)
        decode = self._decoder(path, kind, len(body or b""), then)
        return Request(method, path, decode, body, JSON_TYPE)

    def _decoder(self, path: str, kind: type[S], sent_bytes: int, then: Callable[[S], R] | None = None,
                 ok: tuple[int, ...] = ()) -> Callable[[Answer], Any]:
        def decode(a: Answer):
            if a.status >= 400 or (ok and a.status not in ok):
                raise self.refused(a, sent_bytes)
            try:
                value = msgspec.json.decode(a.body or b"{}", type=kind)
            except msgspec.ValidationError as exc:
                raise BadAnswer(a.status, f"{self.url} answered {path} in a shape this SDK does not know ({exc}); "
                                          "is the gateway of another version?") from None
            except msgspec.DecodeError:
                raise BadAnswer(a.status, f"{self.url} answered {path} with something other than JSON "
                                          f"({a.body[:80]!r}); is --url the gateway's?") from None
            return then(value) if then else value

        return decode


def load_spec(path: str | os.PathLike) -> Any:
    """The FunctionSpec a function file (TOML) declares, its relative command paths made absolute."""
    from thaw.functions_file import FunctionFileError, load_function_file

    try:
        return load_function_file(Path(path))
    except FunctionFileError as exc:
        raise BadFunctionFile(0, str(exc)) from None


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _query(**params) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"?{urllib.parse.urlencode(kept)}" if kept else ""


def body_of(data: Any = None, json: Any = None, content_type: str | None = None,
            has_json: bool = False) -> tuple[bytes, str]:
    """An invoke's body and Content-Type: `json` encoded (application/json), or `data` as bytes
    (str as UTF-8); the type defaults by kind."""
    if has_json:
        return msgspec.json.encode(json), content_type or JSON_TYPE
    if data is None:
        return b"", content_type or "application/octet-stream"
    if isinstance(data, str):
        return data.encode(), content_type or "text/plain; charset=utf-8"
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), content_type or "application/octet-stream"
    raise TypeError(f"data must be bytes or str, not {type(data).__name__}; pass JSON as json=")
