"""Run a service's main coroutine until SIGTERM or SIGINT, then let it shut down cleanly."""

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop
    except ImportError:  # optional speed-up; the standard loop is correct too
        asyncio.run(runner())
    else:
        uvloop.run(runner())


def tune_gc_for_throughput() -> None:
    """For hot-path services: move everything loaded at start-up out of the collector's view and
    collect the young generation less often. Each call allocates many short-lived objects; with
    the default threshold (700) the collector ran thousands of times a second and re-scanned
    the start-up heap. Measured on the gateway, side by side: ~20% less CPU per call."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
