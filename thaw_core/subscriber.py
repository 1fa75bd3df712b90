"""One subscriber shape for every control-plane consumer, on faststream.

Handlers decode nothing and ack nothing: they receive a typed message and raise. This module is
the one place that turns the outcome into an acknowledgement:

- handler returns            -> ack
- `DecodeError` (poison)     -> term: redelivering a message that cannot decode never helps
- `Retry(delay_s)`           -> nak with that delay (e.g. a conflict or a dependency not ready)
- any other exception        -> nak after a short delay, logged with the subject

Every consumer is durable and explicit-ack, so a component that dies mid-message gets it again
after restart; handlers are written to be idempotent for that reason.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from nats.aio.client import Client
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
    config = ConsumerConfig(ack_wait=spec.ack_wait_s, max_deliver=spec.max_deliver,
                            max_ack_pending=spec.max_ack_pending, deliver_policy=deliver_policy,
                            inactive_threshold=spec.inactive_threshold_s or None)

    async def on_message(message: Any) -> None:
        subject = message.raw_message.subject
        await settle(message, subject, lambda: handler(decode(message.body, type_), subject))

    # mypy matches no overload of `subscriber` to a `**` of a dict; the one with a pull_sub is meant.
    broker.subscriber(  # type: ignore[call-overload]
        spec.filter_subject, stream=JStream(spec.stream, declare=False), durable=spec.durable,
        pull_sub=PullSub(batch_size=spec.pull_batch, timeout=1.0), ack_policy=AckPolicy.MANUAL,
        config=config, decoder=_whole_message, **({"inbox_prefix": creds.subscriber_inbox_prefix} if creds else {}),
    )(on_message)


async def settle(message: NatsMessage, subject: str, run: Callable[[], Awaitable[Any]]) -> None:
    """Run the handler under the message's trace context and decide ack / nak / term."""
    token = telemetry.attach(message.headers)
    try:
        # named by the subject's first two tokens (`lease.requested`): few names, the rest an attribute
        with telemetry.span(f"consume {'.'.join(subject.split('.')[:2])}", **{"messaging.destination.name": subject}):
            await run()
    except DecodeError as exc:
        log.error("dropping undecodable message on %s: %s", subject, exc)
        await message.reject()
    except Retry as exc:
        log.info("retrying %s in %.1fs: %s", subject, exc.delay_s, exc)
        await message.nack(delay=exc.delay_s)
    except Exception:
        log.exception("handler for %s failed; it will be redelivered", subject)
        await message.nack(delay=1.0)
    else:
        await message.ack()
    finally:
        telemetry.detach(token)
