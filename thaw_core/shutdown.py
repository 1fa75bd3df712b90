"""A service's clean-up on stop, step by step, where one failing step does not skip the rest.

On stop, a server may be gone: nats-py refuses to drain while reconnecting, and Redis retries
then raises. The agent must still stop its workers after its consumers failed to drain."""

import inspect
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Step = tuple[str, Callable[[], "Awaitable[object] | object"]]


async def run_steps(*steps: Step) -> None:
    """Run each (what, step) in order; a step that raises is logged and the next one runs.
    Cancellation (the stop's grace ran out) is not caught."""
    for what, step in steps:
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.warning("on stop, %s failed (%s: %s); going on", what, type(exc).__name__, exc)
