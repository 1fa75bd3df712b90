"""`thaw.Client`: the gateway's REST API, synchronously, on the standard library only (the CLI
uses it and must start fast; no aiohttp here). Requests and answers are built and read in
thaw/api.py, shared with `thaw.AsyncClient`; this module only moves the bytes.

    from thaw import Client
    client = Client()            # finds a running `thaw up` from any directory
    out = client.invoke("echo", json={"hello": 1})
    print(out.status, out.json())

Also here, for the callers that had them before the SDK: `Gateway` (raw paths) and the
`thaw up` record functions (now in thaw/discovery.py).
"""

import http.client
import json as _json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from thaw import types as T
from thaw.api import JSON_TYPE, Answer, Api, Headers, Request, body_of, load_spec
from thaw.client_base import DEFAULT_TIMEOUT_S, ClientBase
from thaw.discovery import Target, forget_up, record_path, record_up, recorded_up, records_dir
from thaw.errors import GatewayError, ThawError, TimedOut, error_message, no_answer, refusal

R = TypeVar("R")
_NO_JSON = object()


class Client(ClientBase):
    """The gateway's REST API. With no arguments, finds the gateway and key as the CLI does:
    `url`/`key` given, else $THAW_URL / $THAW_API_KEY, else the running `thaw up` recorded in
    $XDG_STATE_HOME/thaw/up.json (or ./.thaw). Every failure raises a ThawError whose `str()`
    is one line saying what to do; `status` is 0 when no HTTP answer came.

    Thread-safe: each request is its own connection."""

    def with_timeout(self, timeout_s: float) -> "Client":
        """The same gateway and key, another timeout per request."""
        return Client.from_target(self.target, timeout_s)

    def request(self, req: Request[R], timeout_s: float | None = None) -> R:
        """Send one request built by thaw.api and decode its answer."""
        return req.decode(send(self.url, self.key, req, self.timeout_s if timeout_s is None else timeout_s))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        pass  # nothing held between requests

    # -- functions

    def deploy(self, spec: Any) -> T.Deployment:
        """Create or replace a function. `spec`: a bus_schemas FunctionSpec, a dict of its fields
        (as in a function file), or a Function as listed."""
        return self.request(self.api.deploy(spec))

    def deploy_file(self, path: str | os.PathLike) -> T.Deployment:
        """Deploy the function file (TOML) at `path`, as `thaw deploy` does."""
        return self.deploy(load_spec(path))

    def functions(self) -> list[T.Function]:
        return self.request(self.api.functions())

    def function(self, name: str) -> T.Function:
        return self.request(self.api.function(name))

    def delete(self, name: str) -> None:
        self.request(self.api.delete(name))

    # -- calls

    def invoke(self, name: str, data: bytes | str | None = None, *, json: Any = _NO_JSON,
               content_type: str | None = None, timeout_s: float | None = None) -> T.InvokeResult:
        """Call `name` and wait for its answer: `data` (bytes, or str as UTF-8) or `json` (any
        JSON-able value). A worker's answer comes back whatever its status (see `.ok`); a
        refusal by the gateway (unknown function, queue full, no worker in time) raises."""
        body, ctype = body_of(data, json, content_type, json is not _NO_JSON)
        return self.request(self.api.invoke(name, body, ctype), timeout_s)

    def invoke_async(self, name: str, data: bytes | str | None = None, *, json: Any = _NO_JSON,
                     content_type: str | None = None) -> str:
        """Queue a call (retried per the function's [async] policy); its id, at once."""
        body, ctype = body_of(data, json, content_type, json is not _NO_JSON)
        return self.request(self.api.invoke_async(name, body, ctype))

    def get_call(self, call_id: str) -> T.Call:
        return self.request(self.api.get_call(call_id))

    def wait_call(self, call_id: str, timeout_s: float = 300.0, poll_s: float = 0.2) -> T.Call:
        """The call once it succeeded, failed or died; TimedOut if still going after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            call = self.get_call(call_id)
            if call.done:
                return call
            if time.monotonic() >= deadline:
                raise TimedOut(0, f"call {call_id} is still {call.status} after {timeout_s:g}s; "
                                  f"ask again later (`thaw calls {call_id}`)")
            time.sleep(poll_s)

    def list_calls(self, fn: str = "", state: str = "", limit: int | None = None) -> list[T.Call]:
        """Your recent async calls, newest first; `state`: queued, running, succeeded, failed or dead."""
        return self.request(self.api.list_calls(fn, state, limit))

    def dlq(self, fn: str = "") -> list[T.DeadCall]:
        """Your dead async calls (those that used up their attempts)."""
        return self.request(self.api.dlq(fn))

    def redrive(self, fn: str = "", ids: Iterable[str] = ()) -> T.Redriven:
        """Queue dead calls again, attempts reset: every one of `fn`, or those in `ids`."""
        return self.request(self.api.redrive(fn, ids))

    # -- the fleet

    def pods(self) -> T.PodList:
        return self.request(self.api.pods())

    def nodes(self) -> list[T.Node]:
        return self.request(self.api.nodes())

    def drain(self, node: str) -> T.Drain:
        """Drain `node` (an admin key): it takes no new pod, and its pods are replaced on other
        nodes, then stopped; poll `nodes()` for its `pods` to reach 0."""
        return self.request(self.api.drain(node))

    def undrain(self, node: str) -> T.Drain:
        return self.request(self.api.undrain(node))

    def snapshots(self) -> list[T.Snapshot]:
        return self.request(self.api.snapshots())

    def logs(self, fn: str, *, pod: str = "", offset: int | None = None, follow: bool = False,
             poll_s: float = 1.0) -> Iterator[T.LogChunk]:
        """The log of `fn`'s `pod` (default: its newest) from `offset` (negative: from the end;
        default: the last 64 KiB), chunk by chunk until its end; with `follow`, then what the
        worker writes next, asked for every `poll_s`, until the caller stops iterating."""
        chunk = self.request(self.api.logs(fn, pod, offset))
        while True:
            yield chunk
            if chunk.next_offset >= chunk.size:
                if not follow:
                    return
                time.sleep(poll_s)
            chunk = self.request(self.api.logs_after(fn, chunk))

    # -- keys and health

    def create_key(self, role: str = "invoker", rate_per_s: float = 0.0) -> T.ApiKey:
        """A new key for your tenant (admin keys only); shown once."""
        return self.request(self.api.create_key(role, rate_per_s))

    def healthy(self) -> bool:
        try:
            return self.request(self.api.healthz(), timeout_s=min(self.timeout_s, 5.0))
        except ThawError:
            return False


def send(url: str, key: str, req: Request, timeout_s: float) -> Answer:
    """One HTTP exchange; a 4xx or 5xx is an Answer, no answer at all a NoAnswer error."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": req.content_type, **req.headers}
    http_req = urllib.request.Request(url + req.path, data=req.body, method=req.method, headers=headers)
    sending = _AnswerReader()
    try:
        with urllib.request.build_opener(sending).open(http_req, timeout=timeout_s) as resp:
            return Answer(resp.status, Headers(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, Headers(exc.headers.items() if exc.headers else ()), exc.read())
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise no_answer(url, reason, req.sent_bytes, sending.cut_off is not None, timeout_s) from None


class Gateway:
    """Raw paths on the same transport, for callers from before the SDK (thaw up, benches)."""

    def __init__(self, url: str, key: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.url, self.key, self.timeout_s = url.rstrip("/"), key, timeout_s
        self._api = Api(self.url)

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = JSON_TYPE) -> tuple[int, bytes, Mapping[str, str]]:
        """(status, body, headers); headers look up case-insensitively."""
        a = send(self.url, self.key, self._api.raw(method, path, body, content_type), self.timeout_s)
        return a.status, a.body, a.headers

    def json(self, method: str, path: str, obj=None) -> dict:
        sent = None if obj is None else _json.dumps(obj).encode()
        status, body, _ = self.call(method, path, sent)
        if status >= 400:
            raise refusal(status, body, self.url, len(sent or b""))
        try:
            return _json.loads(body or b"{}")
        except ValueError:
            raise GatewayError(status, f"{self.url} answered {path} with something other than JSON "
                                       f"({body[:80]!r}); is --url the gateway's?") from None


class _AnswerReader(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Reads the answer even when the server stopped taking the body: a gateway refusing a
    large body answers 413 and closes without reading the rest, and urllib would otherwise
    report only the broken pipe, as if the gateway could not be reached at all."""

    def __init__(self):
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self)
        self.cut_off: OSError | None = None

    def http_open(self, req):
        return self.do_open(self._connection(http.client.HTTPConnection), req)

    def https_open(self, req):
        return self.do_open(self._connection(http.client.HTTPSConnection), req, context=self._context)

    def _connection(self, base: type[http.client.HTTPConnection]):
        handler = self

        class KeepsReading(base):  # type: ignore[valid-type,misc]  # whichever class urllib opens with
            def send(self, data):
                if handler.cut_off is not None:
                    return  # the rest of a body the server no longer reads
                try:
                    super().send(data)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    if self.sock is None:
                        raise  # not even connected: a real "cannot reach"
                    handler.cut_off = exc  # what the server answered, if anything, is still to read

        return KeepsReading


__all__ = ["Client", "Gateway", "GatewayError", "ThawError", "Target", "send", "refusal", "error_message",
           "records_dir", "record_path", "record_up", "recorded_up", "forget_up"]
