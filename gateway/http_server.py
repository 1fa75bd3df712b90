"""Serve the RSGI app with granian, inside the gateway's own event loop.

Granian's embedded server runs the app's callbacks as tasks on the running loop, so HTTP
handlers share the loop (and the lease pools, NATS and Redis connections) with the rest of the
gateway.
"""

import asyncio
import logging

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

log = logging.getLogger(__name__)


class HttpServer:
    def __init__(self, app, host: str, port: int):
        self._server = Server(app, address=host, port=port, interface=Interfaces.RSGI, http=HTTPModes.http1,
                              websockets=False, backlog=1024, log_enabled=False, runtime_threads=1)
        self._host, self._port = host, port
        self._task: asyncio.Task | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; returns once the port accepts connections."""
        self._task = asyncio.create_task(self._server.serve())
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if self._task.done():
                self._task.result()  # raises what made it stop
                raise RuntimeError("the HTTP server stopped during start-up")
            if await _accepts(self._host, self._port):
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"the HTTP server did not listen on {self._host}:{self._port} within {timeout_s}s")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.stop()
        try:
            await asyncio.wait_for(self._task, 10)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True



