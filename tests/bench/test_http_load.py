"""The benchmark's wrk-style load generator, against a real socket server: it counts every
answered call, keeps the asked number of calls in flight, and stops a run at the first answer
that is not 200."""

import asyncio

import pytest

from bench.http_load import ClosedLoop
from thaw_core.ports import free_port


class Server:
    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.answered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.auth: set[bytes] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            self.auth.update(line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization"))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            await asyncio.sleep(0.001)  # let the other connections' calls pile up
            self.in_flight -= 1
            self.answered += 1
            status = b"500 Internal Server Error" if self.fail_after is not None and self.answered > self.fail_after else b"200 OK"
            writer.write(b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
            await writer.drain()


async def start(server: Server) -> tuple[asyncio.AbstractServer, int]:
    port = free_port()
    return await asyncio.start_server(server.serve, "127.0.0.1", port), port


async def test_a_timed_run_counts_every_answer_and_keeps_the_asked_calls_in_flight():
    server = Server()
    listener, port = await start(server)
    load = ClosedLoop("127.0.0.1", port, "/x", b"{}", {"Authorization": "Bearer k"})
    try:
        rate, latencies = await load.run(8, seconds=0.5)
    finally:
        load.close()
        listener.close()
    assert len(latencies) == server.answered > 0
    assert rate > 0 and all(ms > 0 for ms in latencies)
    assert server.max_in_flight == 8
    assert server.auth == {b"Authorization: Bearer k"}


async def test_a_run_bounded_by_calls_makes_that_many_one_at_a_time():
    server = Server()
    listener, port = await start(server)
    load = ClosedLoop("127.0.0.1", port, "/", b"{}", {})
    try:
        _, first = await load.run(1, max_calls=20)
        _, second = await load.run(1, max_calls=30)  # the same connection, reused
    finally:
        load.close()
        listener.close()
    assert (len(first), len(second), server.answered) == (20, 30, 50)
    assert server.max_in_flight == 1


async def test_an_answer_other_than_200_fails_the_run():
    server = Server(fail_after=5)
    listener, port = await start(server)
    load = ClosedLoop("127.0.0.1", port, "/", b"{}", {})
    try:
        with pytest.raises(RuntimeError, match="answered 500"):
            await load.run(4, seconds=5)
    finally:
        load.close()
        listener.close()
