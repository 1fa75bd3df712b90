"""The gateway's keep-alive connections to workers, against a real socket server standing in for
a worker (it answers by path: /ok, /silent never answers, /close-after answers then closes, /sse
streams)."""

import asyncio
import time

import pytest

from gateway.upstream import StreamedBody, Upstream, UpstreamUnreachable
from thaw_core.ports import free_port


async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        path = head.split(b" ")[1]
        if path == b"/silent":
            await asyncio.sleep(3600)
        if path == b"/sse":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(3):
                writer.write(b"9\r\ndata: %d\n\n\r\n" % i)
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")
            continue
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        if path == b"/close-after":
            writer.close()
            return


@pytest.fixture
async def endpoint():
    port = free_port()
    server = await asyncio.start_server(worker, "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}"
    server.close()


async def test_calls_reuse_one_kept_alive_connection(endpoint):
    up = Upstream()
    for i in range(3):
        assert await up.post(endpoint, "/ok", b"%d" % i, "text/plain", 5) == (200, "text/plain", b"%d" % i)
    assert len(up._idle[endpoint]) == 1
    up.close()


async def test_a_silent_worker_times_out_and_its_connection_is_dropped(endpoint):
    up = Upstream()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await up.post(endpoint, "/silent", b"x", "text/plain", 0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert not up._idle.get(endpoint)
    up.close()


async def test_a_connection_the_worker_closed_is_retried_on_a_fresh_one(endpoint):
    up = Upstream()
    assert (await up.post(endpoint, "/close-after", b"a", "text/plain", 5))[2] == b"a"
    await asyncio.sleep(0.05)  # the close reaches us; the idle connection is now dead
    assert (await up.post(endpoint, "/ok", b"b", "text/plain", 5))[2] == b"b"
    up.close()


async def test_a_streamed_answer_comes_chunk_by_chunk_and_frees_the_connection_at_its_end(endpoint):
    up = Upstream()
    status, ctype, body = await up.post(endpoint, "/sse", b"", "application/json", 5)
    assert (status, ctype, isinstance(body, StreamedBody)) == (200, "text/event-stream", True)
    assert [chunk async for chunk in body] == [b"data: %d\n\n" % i for i in range(3)]
    assert (await up.post(endpoint, "/ok", b"after", "text/plain", 5))[2] == b"after"
    assert len(up._idle[endpoint]) == 1
    up.close()


async def test_a_worker_not_listening_is_unreachable():
    up = Upstream()
    with pytest.raises(UpstreamUnreachable):
        await up.post(f"http://127.0.0.1:{free_port()}", "/ok", b"", "text/plain", 5)
    up.close()
