"""The gateway's HTTP/1.1 server, spoken to over real sockets with raw bytes.

The app here is a small stand-in with the two entries the server calls (`answer` for every
request, `answer_now` for the callback path); the real app is covered end to end in
tests/platform."""

import asyncio
import json

import pytest

from gateway.http_server import HttpServer
from thaw_core.ports import free_port


class App:
    """/echo returns the body; /chunks reads it chunk by chunk; /stream streams three parts
    (/stream-cut never ends its stream); /boom raises; /too-large refuses before reading;
    /now is answered by answer_now, 10 ms later, from a timer."""

    def __init__(self):
        self.seen: list[str] = []
        self.release = asyncio.Event()
        self.release.set()

    async def answer(self, request):
        self.seen.append(request.path)
        if request.path == "/echo":
            request.response_bytes(200, [("content-type", "text/plain")], await request())
        elif request.path == "/chunks":
            parts = [chunk async for chunk in request]
            request.response_bytes(200, [], json.dumps([len(p) for p in parts]).encode())
        elif request.path in ("/stream", "/stream-cut"):
            out = request.response_stream(200, [("content-type", "text/event-stream")])
            for i in range(3):
                await out.send_bytes(b"data: %d\n\n" % i)
            if request.path == "/stream":
                out.end()
        elif request.path == "/slow":
            await self.release.wait()
            request.response_bytes(200, [], b"finally")
        elif request.path == "/too-large":
            request.response_bytes(413, [], b"no")
        elif request.path == "/boom":
            raise RuntimeError("a bug")
        else:
            request.response_bytes(404, [], b"no such path")

    def answer_now(self, request, done) -> bool:
        if request.path != "/now":
            return False
        body = request.body_now()

        def answer():
            request.response_bytes(200, [], b"now:" + body)
            done(request)
        asyncio.get_running_loop().call_later(0.01, answer)
        return True


@pytest.fixture
async def server():
    app = App()
    port = free_port()
    srv = HttpServer(app, "127.0.0.1", port)
    await srv.start()
    yield app, port, srv
    await srv.stop(grace_s=1)


async def connect(port):
    return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader) -> tuple[int, dict, bytes]:
    """One response: status, headers (lower-case names), body by content-length or chunks."""
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readline()).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
        return status, headers, body
    return status, headers, await reader.read()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_answers_several_requests_on_one_connection(server):
    _, port, _ = server
    reader, writer = await connect(port)
    for i in range(3):
        writer.write(post("/echo", b"call %d" % i))
        assert await read_response(reader) == (200, {"content-type": "text/plain", "content-length": "6"},
                                               b"call %d" % i)
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(post("/now", b"a") + post("/echo", b"b") + post("/now", b"c") + post("/echo", b"d"))
    bodies = [(await read_response(reader))[2] for _ in range(4)]
    assert bodies == [b"now:a", b"b", b"now:c", b"d"]
    writer.close()


async def test_a_chunked_request_body_is_read_as_it_comes(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(b"POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"6\r\n world\r\n0\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 200 and sum(json.loads(body)) == 11
    writer.close()


async def test_expect_100_continue_is_answered_before_the_body_is_sent(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readline(), 1) == b"HTTP/1.1 100 Continue\r\n"
    await reader.readline()
    writer.write(b"body")
    assert (await read_response(reader))[2] == b"body"
    writer.close()


async def test_a_malformed_request_gets_400_naming_the_problem_and_the_connection_closes(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 400 and headers["connection"] == "close"
    assert "malformed HTTP request" in json.loads(body)["error"]["message"]
    assert await reader.read() == b""


async def test_an_answer_sent_before_the_body_arrived_closes_the_connection(server):
    app, port, _ = server
    reader, writer = await connect(port)
    writer.write(b"POST /too-large HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\npartial")
    status, headers, _ = await read_response(reader)
    assert (status, headers["connection"]) == (413, "close")
    assert await reader.read() == b""


async def test_head_gets_headers_without_a_body(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(b"HEAD /missing HTTP/1.1\r\nHost: t\r\n\r\n" + post("/echo", b"next"))
    status_line = await reader.readline()
    assert b"404" in status_line
    while await reader.readline() != b"\r\n":
        pass
    assert (await read_response(reader))[2] == b"next"  # no stray body bytes in between
    writer.close()


async def test_a_streamed_answer_is_chunked_and_ends_with_the_last_chunk(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(post("/stream", b""))
    status, headers, body = await read_response(reader)
    assert (status, headers["transfer-encoding"]) == (200, "chunked")
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    writer.write(post("/echo", b"still open"))
    assert (await read_response(reader))[2] == b"still open"
    writer.close()


async def test_a_stream_that_never_ended_is_cut_off_not_passed_as_whole(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(post("/stream-cut", b""))
    with pytest.raises((asyncio.IncompleteReadError, ValueError)):
        # no terminating zero-size chunk: the read hits EOF (and does not wait for more)
        await asyncio.wait_for(read_response(reader), 2)


async def test_an_app_failure_is_a_500_with_a_json_body_and_serving_goes_on(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(post("/boom", b""))
    status, _, body = await read_response(reader)
    assert status == 500 and json.loads(body)["error"]["code"] == "internal"
    writer.write(post("/echo", b"after"))
    assert (await read_response(reader))[2] == b"after"
    writer.close()


async def test_http_1_0_gets_its_answer_and_a_closed_connection(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nok")
    status, headers, body = await read_response(reader)
    assert (status, body, headers["connection"]) == (200, b"ok", "close")
    assert await reader.read() == b""


async def test_stop_lets_a_call_in_flight_finish_then_closes(server):
    app, port, srv = server
    app.release.clear()
    reader, writer = await connect(port)
    writer.write(post("/slow", b""))
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(srv.stop(grace_s=5))
    await asyncio.sleep(0.05)
    with pytest.raises(OSError):
        await connect(port)  # no longer accepting
    app.release.set()
    status, headers, body = await read_response(reader)
    assert (status, body, headers["connection"]) == (200, b"finally", "close")
    await stopping


async def test_headers_past_the_bound_get_431_and_the_connection_closes(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n" + b"X-Filler: %s\r\n" % (b"a" * 1000) * 100)
    status, headers, body = await read_response(reader)
    assert (status, headers["connection"]) == (431, "close")
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert await reader.read() == b""


async def test_a_bad_request_behind_a_call_in_flight_waits_for_that_answer(server):
    app, port, _ = server
    app.release.clear()
    reader, writer = await connect(port)
    writer.write(post("/slow", b"") + b"NOT HTTP\r\n\r\n")
    await asyncio.sleep(0.05)
    app.release.set()
    assert (await read_response(reader))[:1] == (200,)
    assert (await read_response(reader))[0] == 400
    assert await reader.read() == b""


@pytest.fixture
async def strict_server():
    """Short deadlines and a small connection cap, so the limits show in a test's time."""
    from gateway.http_connection import Deadlines

    app, port = App(), free_port()
    srv = HttpServer(app, "127.0.0.1", port, max_connections=8, sweep_every_s=0.1,
                     deadlines=Deadlines(head_s=0.6, body_idle_s=0.6, idle_s=5))
    await srv.start()
    yield app, port, srv
    await srv.stop(grace_s=1)


def open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


async def test_slowloris_connections_get_408_and_are_closed_by_the_head_deadline(strict_server):
    _, port, _ = strict_server
    before = open_fds()
    clients = [await connect(port) for _ in range(6)]
    for line in range(3):  # a header line now and then, never the blank line that ends the head
        for _, writer in clients:
            writer.write(b"GET /echo HTTP/1.1\r\n" if line == 0 else b"X-Slow: 1\r\n")
        await asyncio.sleep(0.2)
    for reader, writer in clients:
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        assert status == 408 and b"did not arrive within 0.6s" in body
        assert await reader.read() == b"", "then the connection is closed"
        writer.close()
    await asyncio.sleep(0.2)
    assert open_fds() <= before + 1, "no fd left behind by the closed connections"


async def test_a_body_that_stops_arriving_closes_the_connection(strict_server):
    _, port, _ = strict_server
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_more_than_100_header_fields_get_431(server):
    _, port, _ = server
    reader, writer = await connect(port)
    writer.write(b"GET /echo HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n")
    status, _, body = await read_response(reader)
    assert status == 431 and b"more than 100 header fields" in body
    writer.close()


async def test_connections_over_the_cap_get_503_until_one_closes(strict_server):
    _, port, _ = strict_server
    held = [await connect(port) for _ in range(8)]
    await asyncio.sleep(0.05)
    reader, writer = await connect(port)
    status, _, body = await read_response(reader)
    assert status == 503 and b"limit of 8 connections" in body
    writer.close()
    held.pop()[1].close()
    await asyncio.sleep(0.1)
    reader, writer = await connect(port)
    writer.write(post("/echo", b"served"))
    assert (await read_response(reader))[2] == b"served"
    for _, w in [*held, (reader, writer)]:
        w.close()
