"""One subscriber shape for every control-plane consumer: on faststream (`subscribe`), or on
nats-py's pull subscription directly (`PullConsumer`) for the one consumer whose per-message
cost limits a service (placement's lease requests).

Handlers decode nothing and ack nothing: they receive a typed message and raise. This module is
the one place that turns the outcome into an acknowledgement:

- handler returns            -> ack
- `DecodeError` (poison)     -> term: redelivering a message that cannot decode never helps
- `Retry(delay_s)`           -> nak with that delay (e.g. a conflict or a dependency not ready)
- any other exception        -> nak after a short delay, logged with the subject

Every consumer is durable and explicit-ack, so a component that dies mid-message gets it again
after restart; handlers are written to be idempotent for that reason.
"""

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionReconnectingError
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError
from nats.js.api import DeliverPolicy

from thaw_core.bus_auth import Credentials
from bus_schemas.codec import DecodeError, decode
from bus_schemas.streams import ConsumerSpec
from thaw_core import bus, telemetry

log = logging.getLogger(__name__)
T = TypeVar("T")


class Retry(Exception):
    """Raised by a handler to ask for redelivery after `delay_s`."""

    def __init__(self, reason: str, delay_s: float = 1.0):
        super().__init__(reason)
        self.delay_s = delay_s


async def connect(url: str, name: str, creds: Credentials | None = None) -> tuple[NatsBroker, Client]:
    """A service's one bus connection: the broker its consumers attach to (`subscribe`, then
    `broker.start()`), and the nats-py client under it, already connected, for everything else
    (request/reply, core subscriptions, JetStream). Named `name`, logged in with `creds`, it
    reconnects forever and logs as `thaw_core.bus.connect` does. A first connect the server
    refuses (a wrong password) raises at once. On stop: `stop_consumers`, the service's own
    steps, then `close`."""
    broker = make_broker(url, name, creds)
    nc = await broker.connect()
    # faststream's error callback re-raises a refused login, which is right for the first
    # connect, but later it ends nats-py's reconnect loop for good: a server restarted before
    # it reloaded this user would leave the service deaf until restarted. Ours only logs.
    nc._error_cb = bus.connection_options(name)["error_cb"]
    return broker, nc


async def stop_consumers(broker: NatsBroker) -> None:
    """Take no more messages, keeping the connection open: a service still publishes (pod
    states, releases) while it stops."""
    for consumer in broker.subscribers:
        await consumer.stop()


async def close(broker: NatsBroker, nc: Client) -> None:
    """Stop the consumers, drain and close the connection. nats-py refuses to drain while it
    is reconnecting (the server is gone), so the connection is closed whatever the drain did."""
    try:
        await broker.stop()
    finally:
        await nc.close()


def make_broker(url: str, name: str, creds: Credentials | None = None) -> NatsBroker:
    """With `creds`, logged in as that bus user (thaw_core.bus_auth). Not connected yet."""
    return NatsBroker(bus.server_urls(url), **bus.connection_options(name), **(creds.broker_options() if creds else {}),
                      logger=logging.getLogger(f"faststream.{name}"), log_level=logging.DEBUG)


async def _whole_message(msg: NatsMessage) -> NatsMessage:
    """The handler gets the message itself, as its one argument. Asking faststream for it as a
    second, context argument resolves it through fast_depends in a worker thread, a thread hop
    for every message (a few % of a placement worker's time, bench/fleet_replay.py). Without
    it nothing waits before a handler is called, so the handlers of one fetch reach their first
    wait in the fetch's (stream) order: placement's batches keep that order (placement/batches.py)."""
    return msg


def subscribe(broker: NatsBroker, spec: ConsumerSpec, type_: type[T],
              handler: Callable[[T, str], Awaitable[Any]],
              deliver_policy: DeliverPolicy = DeliverPolicy.ALL, creds: Credentials | None = None) -> None:
    """Attach `handler(message, subject)` to the durable consumer `spec`. Pass the broker's
    `creds`: faststream gives a pull consumer its own reply inbox, which must be the user's."""

    async def on_message(message: Any) -> None:
        subject = message.raw_message.subject
        await settle(message.raw_message, subject, lambda: handler(decode(message.body, type_), subject))

    # mypy matches no overload of `subscriber` to a `**` of a dict; the one with a pull_sub is meant.
    broker.subscriber(  # type: ignore[call-overload]
        spec.filter_subject, stream=JStream(spec.stream, declare=False), durable=spec.durable,
        pull_sub=PullSub(batch_size=spec.pull_batch, timeout=1.0), ack_policy=AckPolicy.MANUAL,
        config=_consumer_config(spec, deliver_policy), decoder=_whole_message,
        **({"inbox_prefix": creds.subscriber_inbox_prefix} if creds else {}),
    )(on_message)


def _consumer_config(spec: ConsumerSpec, deliver_policy: DeliverPolicy) -> ConsumerConfig:
    return ConsumerConfig(ack_wait=spec.ack_wait_s, max_deliver=spec.max_deliver,
                          max_ack_pending=spec.max_ack_pending, deliver_policy=deliver_policy,
                          inactive_threshold=spec.inactive_threshold_s or None)


class PullConsumer:
    """`subscribe`, without faststream: the same typed handler and the same acks by outcome,
    on nats-py's pull subscription. For a consumer whose messages are many and cheap to handle:
    faststream's dispatch (middlewares, context scopes, dependency injection) cost a placement
    worker ~13% of its time, as much as its decisions (bench/fleet_replay.py).

    As faststream's pull subscriber does, a fetch takes what is waiting, up to spec.pull_batch,
    and its handlers run side by side, started in the fetch's (stream) order. The next fetch
    goes out while they run and its handlers start as it lands, after the last fetch's (so
    still in stream order); a third waits until the first's are settled. `start` creates the
    durable if need be, `stop` takes no more messages and waits for those under way."""

    def __init__(self, js: JetStreamContext, spec: ConsumerSpec, type_: type[T],
                 handler: Callable[[T, str], Awaitable[Any]], creds: Credentials | None = None,
                 deliver_policy: DeliverPolicy = DeliverPolicy.ALL):
        self._js, self._spec, self._creds, self._deliver_policy = js, spec, creds, deliver_policy

        async def handle(msg: Msg) -> None:
            await settle(msg, msg.subject, lambda: handler(decode(msg.data, type_), msg.subject))

        self._handle = handle
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping, self._fetching = False, False

    # Fetches whose messages may be under way at once: with one, a worker idled through each
    # fetch's round trip and the next batch's reads (bench/fleet_replay.py).
    FETCHES_UNDER_WAY = 2

    async def start(self) -> None:
        spec = self._spec
        await self._provision()
        self._sub = await self._js.pull_subscribe_bind(
            durable=spec.durable, stream=spec.stream,
            inbox_prefix=self._creds.subscriber_inbox_prefix if self._creds else None)
        self._task = asyncio.create_task(self._consume())

    async def _provision(self) -> None:
        """Create the durable, or bring one made by an older release to this spec: the server
        keeps a durable's config across restarts, and an old max_ack_pending below what the
        workers fetch at once starves each fetch until acks free room."""
        spec = self._spec
        config = _consumer_config(spec, self._deliver_policy)
        config.name = config.durable_name = spec.durable
        config.filter_subject = spec.filter_subject
        try:
            await self._js.add_consumer(spec.stream, config=config)
        except BadRequestError as exc:  # a setting the server will not change in place
            log.warning("durable %s on %s kept its old settings (%s); to take this release's, delete "
                        "it while no consumer runs: nats consumer rm %s %s", spec.durable, spec.stream,
                        exc.description, spec.stream, spec.durable)

    async def _consume(self) -> None:
        under_way: collections.deque[asyncio.Future[None]] = collections.deque()  # fetches' handlers, oldest first
        try:
            while not self._stopping:
                while len(under_way) >= self.FETCHES_UNDER_WAY:
                    await under_way.popleft()
                msgs = await self._fetch()
                if msgs:
                    under_way.append(asyncio.ensure_future(self._settle_all(msgs)))
        finally:
            await asyncio.gather(*under_way)

    async def _fetch(self) -> list[Msg]:
        """What is waiting, up to a pull's worth; [] when nothing came or the fetch failed."""
        self._fetching = True
        try:
            msgs: list[Msg] = await self._sub.fetch(self._spec.pull_batch, timeout=1.0)
            return msgs
        except TimeoutError:  # nothing waiting (nats-py's is a subclass)
            return []
        except (ConnectionClosedError, ConnectionReconnectingError):
            await asyncio.sleep(0.5)  # unsettled messages come again after ack_wait
            return []
        except Exception as exc:
            # nats-py raises on a stored message whose header block it takes for a status
            # reply it does not know (anyone may publish one): the consumer must outlive it. That
            # message comes again after ack_wait until max_deliver; the fetch's others are
            # handed over by the next fetch.
            log.warning("fetching from %s failed, fetching again: %r", self._spec.durable, exc)
            await asyncio.sleep(0.1)
            return []
        finally:
            self._fetching = False

    async def _settle_all(self, msgs: list[Msg]) -> None:
        for outcome in await asyncio.gather(*(self._handle(m) for m in msgs), return_exceptions=True):
            if isinstance(outcome, Exception):  # its ack could not be sent: it comes again after ack_wait
                log.warning("settling a message of %s failed: %r", self._spec.durable, outcome)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is None:
            return
        if self._fetching:
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


async def settle(message: Msg, subject: str, run: Callable[[], Awaitable[Any]]) -> None:
    """Run the handler under the message's trace context and decide ack / nak / term."""
    token = telemetry.attach(message.headers)
    try:
        # named by the subject's first two tokens (`lease.requested`): few names, the rest an attribute
        with telemetry.span(f"consume {'.'.join(subject.split('.')[:2])}", **{"messaging.destination.name": subject}):
            await run()
    except DecodeError as exc:
        log.error("dropping undecodable message on %s: %s", subject, exc)
        await message.term()
    except Retry as exc:
        log.info("retrying %s in %.1fs: %s", subject, exc.delay_s, exc)
        await message.nak(delay=exc.delay_s)
    except Exception:
        log.exception("handler for %s failed; it will be redelivered", subject)
        await message.nak(delay=1.0)
    else:
        await message.ack()
    finally:
        telemetry.detach(token)
