"""Async invocations (`infer.async.<fn>`), their results and their dead letters.

Bodies travel raw as the message payload and these Structs as JSON in one header each: a body
may be as large as the gateway takes (1 MiB), and base64 inside a JSON document would push it
past NATS' max payload. Tolerant between components (unknown fields are dropped); the one piece
of client input, `RedriveRequest`, is strict.
"""

from typing import Annotated, Literal

from msgspec import Meta, Struct

from bus_schemas.version import SCHEMA_VERSION

CallStatus = Literal["queued", "running", "succeeded", "failed", "dead"]
FINAL = frozenset({"succeeded", "failed", "dead"})
CallId = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class AsyncCall(Struct, frozen=True, kw_only=True):
    """A call the gateway accepted (header `Thaw-Call` on `infer.async.<fn>.accepted`; the body
    is the payload). Only the gateway may publish there, so `tenant` is trusted."""

    call_id: CallId  # checked even here: it goes on a header line to the worker
    fn: str
    tenant: str
    content_type: str = "application/octet-stream"
    queued_ms: int = 0
    redrives: int = 0  # times it came back from the dead-letter queue; attempts restart each time
    v: int = SCHEMA_VERSION


class CallRecord(Struct, frozen=True, kw_only=True):
    """A call's latest state (header `Thaw-Call-State` on `infer.result.<id>`; the worker's
    answer, once there is one, is the payload). The last message per subject is the state."""

    call_id: str
    fn: str
    tenant: str
    status: CallStatus
    attempts: int = 0  # worker attempts so far in this round (restarts at a redrive)
    http_status: int = 0  # the worker's (or the gateway's refusal) status of the last attempt
    content_type: str = ""
    error: str = ""
    queued_ms: int = 0
    started_ms: int = 0  # the last attempt's start
    finished_ms: int = 0
    updated_ms: int = 0
    redrives: int = 0
    v: int = SCHEMA_VERSION


class DeadCall(Struct, frozen=True, kw_only=True):
    """Why a call went to the dead-letter queue (header `Thaw-Dead` on `infer.dlq.<fn>`, beside
    its `Thaw-Call`; the body is the payload, kept for a redrive)."""

    call_id: str
    fn: str
    tenant: str
    attempts: int
    http_status: int
    reason: str
    died_ms: int
    v: int = SCHEMA_VERSION


class RedriveRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/dlq/redrive: every dead call of `fn`, or the calls named in `ids` (one of the two)."""

    fn: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,62}$")] = ""
    ids: Annotated[tuple[CallId, ...], Meta(max_length=1000)] = ()
