"""Run a service's main coroutine until SIGTERM or SIGINT, then let it shut down cleanly."""

import asyncio
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
