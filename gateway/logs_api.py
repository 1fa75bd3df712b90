"""GET /v1/functions/{fn}/logs: a worker's log, read by the agent of the node it runs (or ran) on
over `logs.read.<node>`, a chunk at a time: `thaw logs` follows a log by asking again from
`next_offset`.

Query: `pod` (default: the function's newest pod, live or failed in the last 15 minutes),
`offset` (a byte offset; negative counts from the end; default: the last 64 KiB), `max_bytes`
(1 to 256 KiB). The caller must own the function (the route checks) and the pod must be one of
its pods (checked here against the store, not taken from the request).
"""

from urllib.parse import parse_qs

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus_schemas import subjects
from bus_schemas.codec import DecodeError, decode, encode
from bus_schemas.logs import MAX_CHUNK_BYTES, LogsChunk, LogsRead
from thaw_core.clock import now_ms
from thaw_core.store.pods import PodRecord, Pods

from gateway.errors import ApiError

DEFAULT_BYTES = 64 * 1024
RECENT_MS = 15 * 60_000  # failed pods are listed this long (GET /v1/pods); their logs too
ASK_TIMEOUT_S = 5.0


class LogsApi:
    def __init__(self, nc: Client, pods: Pods):
        self._nc, self._pods = nc, pods

    async def read(self, fn: str, query_string: str) -> dict:
        """A chunk of the log of `fn`'s pod (`fn` is the caller's, checked by the route)."""
        q = parse_qs(query_string or "", keep_blank_values=True)
        offset = _int(q, "offset", -DEFAULT_BYTES, -(1 << 62), 1 << 62)
        max_bytes = _int(q, "max_bytes", DEFAULT_BYTES, 1, MAX_CHUNK_BYTES)
        pod = await self._pod(fn, _one(q, "pod"))
        chunk = await self._ask(pod, LogsRead(pod=pod.pod, offset=offset, max_bytes=max_bytes))
        if chunk.error:
            raise ApiError(404, "no_log", f"{chunk.error}; the log lives on its node while the node keeps it")
        return {"pod": pod.pod, "node": pod.node, "state": pod.state.value, "offset": chunk.offset,
                "next_offset": chunk.offset + len(chunk.data), "size": chunk.size,
                "shared_with": chunk.shared_with, "text": chunk.data.decode(errors="replace")}

    async def _pod(self, fn: str, asked: str) -> PodRecord:
        if asked:
            record = await self._pods.get(asked)
            if record is None or record.fn != fn:
                raise ApiError(404, "not_found", f"{fn} has no pod {asked!r} (see `thaw ls` for its pods)", field="pod")
            return record
        pods = [p for p in await self._pods.live(fn)]
        pods += [p for p in await self._pods.recent_failures(now_ms() - RECENT_MS) if p.fn == fn]
        if not pods:
            raise ApiError(404, "not_found", f"{fn} has no pod now and none failed in the last 15 minutes: "
                                             "invoke it, then ask again")
        return max(pods, key=lambda p: p.created_ms)

    async def _ask(self, pod: PodRecord, ask: LogsRead) -> LogsChunk:
        try:
            reply = await self._nc.request(subjects.logs_read(pod.node), encode(ask), timeout=ASK_TIMEOUT_S)
            return decode(reply.data, LogsChunk)
        except NoRespondersError:
            raise ApiError(503, "node_unavailable", f"the agent of node {pod.node} does not answer: the node is down "
                                                    "or restarting; retry later", retry_after_s=2.0) from None
        except NatsTimeout:
            raise ApiError(504, "node_timeout", f"the agent of node {pod.node} did not answer within "
                                                f"{ASK_TIMEOUT_S:g}s; retry later") from None
        except DecodeError:
            raise ApiError(502, "bad_answer", f"the agent of node {pod.node} answered something else than a log") from None


def _one(q: dict[str, list[str]], name: str) -> str:
    values = q.get(name, [])
    if len(values) > 1:
        raise ApiError(400, "invalid_field", f"query parameter `{name}` given {len(values)} times; give it once",
                       field=name)
    return values[0] if values else ""


def _int(q: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = _one(q, name)
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_field", f"query parameter `{name}` must be an integer, not {raw[:40]!r}",
                       field=name) from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_field", f"query parameter `{name}` must be between {low} and {high}", field=name)
    return value
