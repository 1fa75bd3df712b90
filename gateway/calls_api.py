"""HTTP routes of async calls: `POST /v1/functions/<fn>/invoke?async=1`, `GET /v1/calls[/<id>]`,
`GET /v1/dlq`, `POST /v1/dlq/redrive`. A tenant sees and redrives its own calls only; another
tenant's call id answers 404, as an unknown one does."""

import base64
import secrets
from urllib.parse import parse_qs

import msgspec
from nats.js import JetStreamContext

from bus_schemas import headers as H
from bus_schemas import subjects
from bus_schemas.calls import AsyncCall, CallRecord, RedriveRequest
from bus_schemas.codec import DecodeError, decode, encode
from thaw_core import bus
from thaw_core.clock import now_ms

from gateway import errors
from gateway.call_store import CallStore, DeadLetter
from gateway.errors import ApiError
from gateway.specs import SpecCache

ASYNC_VALUES = {"1": True, "true": True, "0": False, "false": False}
STATUSES = ("queued", "running", "succeeded", "failed", "dead")
TEXT_TYPES = ("text/", "application/json")


def query(request) -> dict[str, list[str]]:
    return parse_qs(request.query_string or "", keep_blank_values=True)


def wants_async(request) -> bool:
    """`?async=1` (or true); 0, false or absent: a sync call. Anything else is a 400."""
    values = query(request).get("async")
    if values is None:
        return False
    if len(values) != 1 or values[0].lower() not in ASYNC_VALUES:
        raise ApiError(400, "invalid_field", "query parameter `async` must be 1 (queue the call) or 0, once",
                       field="async")
    return ASYNC_VALUES[values[0].lower()]


class CallsApi:
    def __init__(self, js: JetStreamContext, store: CallStore, specs: SpecCache, max_body_bytes: int):
        self._js, self.store, self.specs, self.max_body_bytes = js, store, specs, max_body_bytes

    async def invoke_async(self, tenant: str, fn: str, body: bytes, content_type: str) -> tuple[int, dict]:
        """Queue the call; 202 with its id. Its state is stored first, so a gateway that dies
        right after still answers GET /v1/calls/<id>."""
        spec = await self.specs.get(fn)
        if spec is None or spec.tenant != tenant:
            raise errors.unknown_function(fn)
        if len(body) > self.max_body_bytes:
            raise ApiError(413, "body_too_large", f"an async call's body is kept on the bus, so it may be at most "
                           f"{self.max_body_bytes} bytes; this one is {len(body)}", field="body")
        call = AsyncCall(call_id=f"c{secrets.token_hex(12)}", fn=fn, tenant=tenant, content_type=content_type,
                         queued_ms=now_ms())
        await self._queue(call, body)
        return 202, {"call_id": call.call_id, "status": "queued"}

    async def _queue(self, call: AsyncCall, body: bytes) -> None:
        record = CallRecord(call_id=call.call_id, fn=call.fn, tenant=call.tenant, status="queued",
                            queued_ms=call.queued_ms, updated_ms=now_ms(), redrives=call.redrives)
        await self.store.put(record)
        try:
            await _publish_call(self._js, call, body)
        except Exception as exc:  # a full queue (JetStream refuses), or the bus away for good
            await self.store.put(msgspec.structs.replace(record, status="failed", updated_ms=now_ms(),
                                                         error=f"not queued: {exc}"))
            raise ApiError(503, "queue_unavailable", f"{call.fn}: the call could not be queued ({exc}); retry later",
                           retry_after_s=5) from None

    async def get_call(self, tenant: str, call_id: str) -> dict:
        found = await self.store.get(call_id) if subjects.TOKEN_RE.match(call_id) else None
        if found is None or found[0].tenant != tenant:
            raise ApiError(404, "unknown_call", f"no call {call_id!r}: ids come from POST .../invoke?async=1; a "
                                                "result is kept for a day")
        return call_row(*found)

    async def list_calls(self, tenant: str, request) -> dict:
        q = query(request)
        status = _one(q, "state") or _one(q, "status")
        if status and status not in STATUSES:
            raise ApiError(400, "invalid_field", f"`state` must be one of {', '.join(STATUSES)}", field="state")
        fn = _one(q, "fn")
        if status == "dead":
            return {"calls": [dead_row(letter) for letter in await self.store.dead(tenant, _fn_or_400(fn))]}
        records = await self.store.recent(tenant, fn, status, limit=_limit(q))
        return {"calls": [call_row(r) for r in records]}

    async def list_dlq(self, tenant: str, request) -> dict:
        fn = _fn_or_400(_one(query(request), "fn"))
        return {"dead": [dead_row(letter) for letter in await self.store.dead(tenant, fn)]}

    async def redrive(self, tenant: str, body: bytes) -> dict:
        """Queue dead calls again with their attempts reset, then take them out of the DLQ."""
        try:
            asked = decode(body or b"{}", RedriveRequest)
        except DecodeError as exc:
            raise ApiError(400, "invalid_field", f"{exc.field}: {exc.reason}", field=exc.field) from None
        if bool(asked.fn) == bool(asked.ids):
            raise ApiError(400, "invalid_field", "give exactly one of `fn` (every dead call of it) or `ids`",
                           field="$.fn")
        letters = await self.store.dead(tenant, asked.fn)
        if asked.ids:
            wanted = set(asked.ids)
            letters = [x for x in letters if x.call.call_id in wanted]
        redriven = []
        for letter in _latest_per_call(letters):
            await self._redrive_one(letter)
            redriven.append(letter.call.call_id)
        missing = [i for i in asked.ids if i not in set(redriven)]
        return {"redriven": redriven, "not_found": missing}

    async def _redrive_one(self, letter: DeadLetter) -> None:
        call = msgspec.structs.replace(letter.call, redrives=letter.call.redrives + 1, queued_ms=now_ms())
        await self._queue(call, letter.body)
        await self.store.forget_dead(letter)


async def _publish_call(js: JetStreamContext, call: AsyncCall, body: bytes) -> None:
    await bus.publish_bytes(js, subjects.infer_async_accepted(call.fn), body, f"call:{call.call_id}:{call.redrives}",
                            {H.CALL: encode(call).decode(), H.CONTENT_TYPE: call.content_type}, attempts=5)


def _latest_per_call(letters: list[DeadLetter]) -> list[DeadLetter]:
    """One letter per call (the newest round), dropping stale copies of older rounds."""
    latest: dict[str, DeadLetter] = {}
    for letter in letters:
        have = latest.get(letter.call.call_id)
        if have is None or letter.call.redrives >= have.call.redrives:
            latest[letter.call.call_id] = letter
    return list(latest.values())


def call_row(record: CallRecord, result: bytes = b"") -> dict:
    row = msgspec.to_builtins(record)
    for internal in ("tenant", "v"):
        row.pop(internal, None)
    row["result"], row["result_encoding"] = _result(result, record.content_type)
    return row


def dead_row(letter: DeadLetter) -> dict:
    d = letter.dead
    return {"call_id": d.call_id, "fn": d.fn, "status": "dead", "attempts": d.attempts, "http_status": d.http_status,
            "reason": d.reason, "died_ms": d.died_ms, "queued_ms": letter.call.queued_ms,
            "redrives": letter.call.redrives}


def _result(data: bytes, content_type: str) -> tuple[str | None, str]:
    """The answer as text when it is text (JSON included), else base64."""
    if not data:
        return None, "none"
    if content_type.startswith(TEXT_TYPES):
        try:
            return data.decode(), "text"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode(), "base64"


def _one(q: dict[str, list[str]], name: str) -> str:
    values = q.get(name) or [""]
    if len(values) > 1:
        raise ApiError(400, "invalid_field", f"query parameter `{name}` given more than once", field=name)
    return values[0]


def _fn_or_400(fn: str) -> str:
    if fn and not subjects.TOKEN_RE.match(fn):
        raise ApiError(400, "invalid_field", "`fn` must be a function name", field="fn")
    return fn


def _limit(q: dict[str, list[str]]) -> int:
    raw = _one(q, "limit") or "100"
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise ApiError(400, "invalid_field", "`limit` must be a whole number from 1 to 1000", field="limit")
    return int(raw)
