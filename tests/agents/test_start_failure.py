"""What a failed start is reported with: the log's tail, how the worker ended, what the last
health probe got (a real HTTP server answers the probes)."""

import asyncio
import signal

import aiohttp
import pytest
from aiohttp import web

from agents.health import probe
from agents.runtime.process import exit_status
from agents.start_failure import describe, log_tail
from thaw_core.ports import free_port


def test_the_tail_is_the_last_lines_within_the_byte_limit_decoded_leniently(tmp_path):
    log = tmp_path / "w.log"
    log.write_bytes(b"".join(b"line %d\n" % n for n in range(100)) + b"bad \xff byte\n\n")
    assert log_tail(log).splitlines() == [*(f"line {n}" for n in range(91, 100)), "bad \ufffd byte"]
    assert len(log_tail(log, lines=1000, max_bytes=64).encode()) <= 64
    assert not log_tail(log, lines=1000, max_bytes=64).startswith("ine"), "a cut first line is dropped"


def test_a_missing_or_empty_log_has_no_tail(tmp_path):
    (tmp_path / "empty.log").write_bytes(b"")
    assert log_tail(tmp_path / "empty.log") == log_tail(tmp_path / "missing.log") == log_tail(None) == ""


def test_a_reason_names_only_the_parts_it_has(tmp_path):
    assert describe("exited") == "exited"
    assert describe("not healthy", "GET /healthz: HTTP 500", "boom", tmp_path / "w.log") == (
        f"not healthy; last health probe: GET /healthz: HTTP 500; last lines of its log:\nboom; "
        f"whole log: {tmp_path / 'w.log'}")


@pytest.mark.parametrize("code, said", [
    (3, "exited with exit code 3"),
    (0, "exited with exit code 0"),
    (-signal.SIGKILL, "killed by signal SIGKILL"),
    (128 + signal.SIGSEGV, "exited with exit code 139 (signal SIGSEGV)"),
    (None, ""),
])
def test_an_exit_status_says_the_code_or_the_signal(code, said):
    assert exit_status(code) == said


async def test_a_probe_says_what_it_got():
    async def health(request):
        return web.Response(status=int(request.query.get("status", "200")))

    app = web.Application()
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            endpoint = f"http://127.0.0.1:{port}"
            assert await probe(http, endpoint, "/healthz") == ""
            assert await probe(http, endpoint, "/healthz?status=500") == "GET /healthz?status=500: HTTP 500"
            await runner.cleanup()
            await asyncio.sleep(0)
            assert await probe(http, endpoint, "/healthz") == "GET /healthz: connection refused"
    finally:
        await runner.cleanup()
