"""`thaw.AsyncClient`: the same API as `thaw.Client`, on aiohttp. Requests and answers are built
and read in thaw/api.py; only the transport differs.

    from thaw import AsyncClient
    async with AsyncClient() as client:
        out = await client.invoke("echo", json={"hello": 1})
"""

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

import aiohttp

from thaw import types as T
from thaw.api import Answer, Headers, Request, body_of, load_spec
from thaw.client_base import ClientBase
from thaw.discovery import Target
from thaw.errors import ThawError, TimedOut, no_answer

R = TypeVar("R")
_NO_JSON = object()
_CUT_OFF = {errno.EPIPE, errno.ECONNRESET}


class AsyncClient(ClientBase):
    """`thaw.Client`'s API with `await`. Found and configured the same way; holds one aiohttp
    session (keep-alive), made at the first request: close it with `await client.close()` or
    `async with AsyncClient() as client:`."""

    def _setup(self, target: Target, timeout_s: float) -> None:
        super()._setup(target, timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, req: Request[R], timeout_s: float | None = None) -> R:
        """Send one request built by thaw.api and decode its answer."""
        return req.decode(await self._send(req, self.timeout_s if timeout_s is None else timeout_s))

    async def _send(self, req: Request, timeout_s: float) -> Answer:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.key}"})
        headers = {"Content-Type": req.content_type, **req.headers}
        try:
            async with self._session.request(req.method, self.url + req.path, data=req.body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                return Answer(resp.status, Headers(resp.headers.items()), await resp.read())
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise no_answer(self.url, TimeoutError(), req.sent_bytes, False, timeout_s) from None
        except aiohttp.ClientConnectorError as exc:
            why = exc.os_error
            reason = os.strerror(why.errno) if isinstance(why, OSError) and why.errno else why
            raise no_answer(self.url, reason, req.sent_bytes, False, timeout_s) from None
        except (aiohttp.ClientError, OSError) as exc:
            cut_off = bool(req.sent_bytes) and (isinstance(exc, aiohttp.ServerDisconnectedError)
                                                or getattr(exc, "errno", None) in _CUT_OFF)
            raise no_answer(self.url, exc, req.sent_bytes, cut_off, timeout_s) from None

    # -- functions

    async def deploy(self, spec: Any) -> T.Deployment:
        return await self.request(self.api.deploy(spec))

    async def deploy_file(self, path: str | os.PathLike) -> T.Deployment:
        return await self.deploy(load_spec(path))

    async def functions(self) -> list[T.Function]:
        return await self.request(self.api.functions())

    async def function(self, name: str) -> T.Function:
        return await self.request(self.api.function(name))

    async def delete(self, name: str) -> None:
        await self.request(self.api.delete(name))

    # -- calls

    async def invoke(self, name: str, data: bytes | str | None = None, *, json: Any = _NO_JSON,
                     content_type: str | None = None, timeout_s: float | None = None) -> T.InvokeResult:
        body, ctype = body_of(data, json, content_type, json is not _NO_JSON)
        return await self.request(self.api.invoke(name, body, ctype), timeout_s)

    async def invoke_async(self, name: str, data: bytes | str | None = None, *, json: Any = _NO_JSON,
                           content_type: str | None = None) -> str:
        body, ctype = body_of(data, json, content_type, json is not _NO_JSON)
        return await self.request(self.api.invoke_async(name, body, ctype))

    async def get_call(self, call_id: str) -> T.Call:
        return await self.request(self.api.get_call(call_id))

    async def wait_call(self, call_id: str, timeout_s: float = 300.0, poll_s: float = 0.2) -> T.Call:
        deadline = time.monotonic() + timeout_s
        while True:
            call = await self.get_call(call_id)
            if call.done:
                return call
            if time.monotonic() >= deadline:
                raise TimedOut(0, f"call {call_id} is still {call.status} after {timeout_s:g}s; "
                                  f"ask again later (`thaw calls {call_id}`)")
            await asyncio.sleep(poll_s)

    async def list_calls(self, fn: str = "", state: str = "", limit: int | None = None) -> list[T.Call]:
        return await self.request(self.api.list_calls(fn, state, limit))

    async def dlq(self, fn: str = "") -> list[T.DeadCall]:
        return await self.request(self.api.dlq(fn))

    async def redrive(self, fn: str = "", ids: Iterable[str] = ()) -> T.Redriven:
        return await self.request(self.api.redrive(fn, ids))

    # -- the fleet

    async def pods(self) -> T.PodList:
        return await self.request(self.api.pods())

    async def nodes(self) -> list[T.Node]:
        return await self.request(self.api.nodes())

    async def drain(self, node: str) -> T.Drain:
        """Drain `node` (an admin key): it takes no new pod, and its pods are replaced on other
        nodes, then stopped; poll `nodes()` for its `pods` to reach 0."""
        return await self.request(self.api.drain(node))

    async def undrain(self, node: str) -> T.Drain:
        return await self.request(self.api.undrain(node))

    async def snapshots(self) -> list[T.Snapshot]:
        return await self.request(self.api.snapshots())

    async def logs(self, fn: str, *, pod: str = "", offset: int | None = None, follow: bool = False,
                   poll_s: float = 1.0) -> AsyncIterator[T.LogChunk]:
        chunk = await self.request(self.api.logs(fn, pod, offset))
        while True:
            yield chunk
            if chunk.next_offset >= chunk.size:
                if not follow:
                    return
                await asyncio.sleep(poll_s)
            chunk = await self.request(self.api.logs_after(fn, chunk))

    # -- keys and health

    async def create_key(self, role: str = "invoker", rate_per_s: float = 0.0) -> T.ApiKey:
        return await self.request(self.api.create_key(role, rate_per_s))

    async def healthy(self) -> bool:
        try:
            return await self.request(self.api.healthz(), timeout_s=min(self.timeout_s, 5.0))
        except ThawError:
            return False
