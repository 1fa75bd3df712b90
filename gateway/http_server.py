"""Serve the HTTP bridge on the gateway's own event loop (uvloop), one `HttpConnection` per client.

Why not granian or uvicorn: on this project's 2-core machines the warm path is a CPU budget
shared by the load, the gateway and the worker. Measured side by side on the echo benchmark,
granian's embedded server (Rust threads handing each request to the Python loop) cost the
gateway 110-150 us of CPU per forwarded call and uvicorn's ASGI layers about as much; a plain
asyncio protocol with httptools costs a fraction of that, because a call then runs as one task on
the loop that also holds the lease pools and the worker connections. `bench/warm_path.py` is the
measurement; rerun it before changing this choice.
"""

import asyncio
import logging

from gateway.http_connection import App, Deadlines, HttpConnection

log = logging.getLogger(__name__)
MAX_CONNECTIONS = 4096  # beyond it a new connection is answered 503 and closed


class HttpServer:
    def __init__(self, app: App, host: str, port: int, backlog: int = 1024, max_connections: int = MAX_CONNECTIONS,
                 deadlines: Deadlines = Deadlines(), sweep_every_s: float = 2.0):
        self._app, self._host, self._port, self._backlog = app, host, port, backlog
        self._max_connections, self._deadlines, self._sweep_every_s = max_connections, deadlines, sweep_every_s
        self._server: asyncio.Server | None = None
        self._connections: set[HttpConnection] = set()
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        """Listen; returns once the port accepts connections."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, self._host, self._port, backlog=self._backlog,
                                                reuse_address=True)
        self._sweeper = asyncio.create_task(self._enforce_deadlines())

    def _connection(self) -> HttpConnection:
        conn = HttpConnection(self._app, self._connections)
        if len(self._connections) >= self._max_connections:
            conn.over_limit = self._max_connections
        return conn

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let calls in flight finish (up to grace_s), then close every connection."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._connections):
            conn.close_when_idle()
        deadline = asyncio.get_running_loop().time() + grace_s
        while self._connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self._connections):
            conn.transport.abort()  # type: ignore[union-attr]  # in the set only once connected
        self._server = None

    async def _enforce_deadlines(self) -> None:
        """One sweep every few seconds instead of a timer per request: the hot path stays free."""
        while True:
            await asyncio.sleep(self._sweep_every_s)
            now = asyncio.get_running_loop().time()
            for conn in list(self._connections):
                conn.enforce(self._deadlines, now)
