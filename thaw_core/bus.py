"""The bus connection: connect with reconnect, provision streams, publish with de-duplication.

Every JetStream publish carries `Nats-Msg-Id` (so a retried publish is stored once) and the
current trace context.
"""

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import BadRequestError

from bus_schemas import headers as H
from bus_schemas.codec import encode
from bus_schemas.streams import ALL_STREAMS, StreamSpec
from thaw_core import telemetry

if TYPE_CHECKING:
    from thaw_core.bus_auth import Credentials

log = logging.getLogger(__name__)


_process_headers = Client._process_headers


async def _headers_or_none(self: Client, headers: bytes | None) -> dict[str, str] | None:
    """nats-py (2.16) decodes a message's header block outside its own error handling: one
    malformed block from any publisher ends the client's read loop for good, silently (it stays
    "connected"). A block we cannot read counts as no headers instead."""
    try:
        return await _process_headers(self, headers)
    except Exception:
        log.warning("dropped an unreadable NATS header block (%d bytes)", len(headers or b""))
        return None


Client._process_headers = _headers_or_none  # type: ignore[method-assign]  # the patch is the point


def server_urls(url: str | list[str]) -> list[str]:
    """The servers to try, from one URL, a comma-separated list ("nats://a:4222,nats://b:4222",
    as an operator writes a cluster's in a flag or variable) or a list. nats-py would take the
    comma-separated string as one (bad) URL."""
    urls = url.split(",") if isinstance(url, str) else list(url)
    return [u.strip() for u in urls if u.strip()]


async def connect(url: str | list[str], name: str, creds: "Credentials | None" = None) -> Client:
    """A client that reconnects forever: a restarted nats-server is a normal event. With
    `creds` it logs in as that user, takes that user's reply-inbox prefix (the only inboxes its
    permissions let it read), and verifies a `tls://` server with the credentials' CA file.
    A service's own connection comes from `thaw_core.subscriber.connect` instead (one
    connection for its consumers and the rest)."""
    return await nats.connect(server_urls(url), **connection_options(name),
                              **(creds.connect_options() if creds else {}))


def connection_options(name: str) -> dict[str, Any]:
    """Keyword arguments every connection named `name` takes, for `nats.connect` and
    faststream's `NatsBroker` alike: it is named (nats-server's /connz shows the name),
    reconnects forever, and logs a disconnect, a reconnect and a refusal."""
    async def on_disconnect() -> None:
        log.warning("%s: disconnected from NATS, reconnecting", name)

    async def on_reconnect() -> None:
        log.info("%s: reconnected to NATS", name)

    async def on_error(exc: Exception) -> None:
        # A refused login or publish is a deployment error someone must see; the rest is noise.
        refused = "violation" in str(exc).lower() or isinstance(exc, nats.errors.AuthorizationError)
        log.log(logging.WARNING if refused else logging.DEBUG, "%s: NATS error: %s", name, exc)

    return {"name": name, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.25, "connect_timeout": 2,
            "allow_reconnect": True, "disconnected_cb": on_disconnect, "reconnected_cb": on_reconnect,
            "error_cb": on_error}


def stream_config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.WORK_QUEUE if spec.retention == "workqueue" else RetentionPolicy.LIMITS,
        max_msgs_per_subject=spec.max_msgs_per_subject,
        max_age=spec.max_age_s or None,
        duplicate_window=spec.duplicate_window_s,
        max_msgs=spec.max_msgs,
        max_bytes=spec.max_bytes,
        discard=DiscardPolicy.NEW if spec.discard == "new" else DiscardPolicy.OLD,
        num_replicas=spec.replicas,
    )


async def ensure_streams(js: JetStreamContext, specs: tuple[StreamSpec, ...] = ALL_STREAMS,
                         replicas: int | None = None) -> None:
    """Create or update every stream. Safe to run from every component at start-up, in parallel.
    `replicas` overrides every spec's (3 on a 3-server cluster: thaw_core.nats_cluster)."""
    for spec in specs:
        config = stream_config(spec if replicas is None else dataclasses.replace(spec, replicas=replicas))
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


async def publish(js: JetStreamContext, subject: str, msg: Any, msg_id: str,
                  extra_headers: dict[str, str] | None = None, attempts: int = 20) -> None:
    """Publish to JetStream, retrying through a reconnect; `msg_id` makes retries idempotent."""
    await publish_bytes(js, subject, encode(msg), msg_id, extra_headers, attempts)


async def publish_bytes(js: JetStreamContext, subject: str, payload: bytes, msg_id: str,
                        extra_headers: dict[str, str] | None = None, attempts: int = 20) -> None:
    """`publish` of a payload that is already bytes (e.g. a call's body, its metadata in headers).
    A refusal by JetStream itself (a full stream) raises nats.js.errors.APIError at once."""
    headers = telemetry.inject({H.MSG_ID: msg_id, **(extra_headers or {})})
    for attempt in range(attempts):
        try:
            await js.publish(subject, payload, headers=headers, timeout=2)
            return
        # nats-py reports a 503 (no stream leader yet: a restarting server, or a cluster electing a
        # new leader after one died) as NoStreamResponseError, not NoRespondersError.
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError,
                nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError) as exc:
            if attempt == attempts - 1:
                raise
            log.debug("publish to %s failed (%s), retrying", subject, exc)
            await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))


async def publish_core(nc: Client, subject: str, msg: Any) -> None:
    """Fire-and-forget core publish (heartbeats). A lost one is covered by the next."""
    try:
        await nc.publish(subject, encode(msg), headers=telemetry.inject({}))
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError):
        pass

