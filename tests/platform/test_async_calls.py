"""Async invocations on the real platform: queued at once, run by the gateway's consumer of the
INFER_ASYNC work queue, retried with backoff, dead-lettered, redriven, and kept across a gateway
killed mid-way (tests/platform/calls_worker.py records each call id's effect)."""

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import nats

from bus_schemas import streams, subjects
from bus_schemas.calls import CallRecord
from bus_schemas.codec import decode
from thaw_core.ports import free_port
from thaw_core.store.apikeys import ApiKeys

from tests.conftest import eventually
from tests.platform.conftest import _healthy, deploy

WORKER = str(Path(__file__).resolve().parent / "calls_worker.py")
FINAL = {"succeeded", "failed", "dead"}


def calls_fn(name: str = "calls", fail_first: int = 0, slow_ms: int = 0, max_attempts: int = 3,
             concurrency: int = 8) -> dict:
    return {"name": name, "command": ["{python}", WORKER], "snapshot": False,
            "env": {"FAIL_FIRST": str(fail_first), "SLOW_MS": str(slow_ms)},
            "resources": {"gpu_count": 0, "cpu_milli": 500, "memory_mib": 128},
            "scaling": {"max_pods": 1, "concurrency": concurrency, "idle_timeout_s": 600, "start_timeout_s": 20,
                        "max_queue": 1024},
            "async": {"max_attempts": max_attempts, "backoff_s": 0.2, "max_backoff_s": 1.0}}


async def queue(http, url: str, fn: str, body: bytes, query: str = "?async=1") -> tuple[int, dict]:
    async with http.post(f"{url}/v1/functions/{fn}/invoke{query}", data=body) as resp:
        return resp.status, json.loads(await resp.read())


async def call(http, url: str, call_id: str) -> tuple[int, dict]:
    async with http.get(f"{url}/v1/calls/{call_id}") as resp:
        return resp.status, json.loads(await resp.read())


async def settled(http, url: str, call_id: str, timeout_s: float = 30) -> dict:
    async def check():
        status, row = await call(http, url, call_id)
        return row if status == 200 and row["status"] in FINAL else None
    return await eventually(check, timeout_s, every_s=0.1, what=f"call {call_id} to settle")


async def get_json(http, url: str) -> dict:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.read())


def thaw(h, key: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thaw.cli", "--url", h.url, "--key", key, *args],
                          capture_output=True, text=True, timeout=60)


async def test_an_async_call_answers_at_once_and_its_result_is_fetched_later(platform, http):
    await deploy(http, platform.url, calls_fn())
    started = time.monotonic()
    status, queued = await queue(http, platform.url, "calls", b"hello later")
    assert status == 202 and queued["status"] == "queued", queued
    assert time.monotonic() - started < 2, "queued at once, not after the cold start"
    row = await settled(http, platform.url, queued["call_id"])
    assert row["status"] == "succeeded" and row["attempts"] == 1 and row["http_status"] == 200, row
    # the worker was told the call's id, for its idempotency
    assert json.loads(row["result"]) == {"call_id": queued["call_id"], "echo": "hello later"}
    assert row["result_encoding"] == "text" and row["queued_ms"] <= row["started_ms"] <= row["finished_ms"]
    # a 4xx from the worker is final: no retry
    _, bad = await queue(http, platform.url, "calls", b"bad")
    row = await settled(http, platform.url, bad["call_id"])
    assert (row["status"], row["attempts"], row["http_status"]) == ("failed", 1, 400), row


async def test_a_failing_call_is_retried_then_dead_lettered_and_a_redrive_completes_it(platform, http):
    """The worker fails the first 2 attempts of each id; the function allows 2 attempts, so the
    call dies; redriven (attempts reset), its third attempt overall succeeds."""
    await deploy(http, platform.url, calls_fn(fail_first=2, max_attempts=2))
    key = http.headers["Authorization"].split()[1]
    cli = thaw(platform, key, "invoke", "calls", "doomed", "--async")
    assert cli.returncode == 0, cli.stderr
    call_id = cli.stdout.strip()
    row = await settled(http, platform.url, call_id)
    assert (row["status"], row["attempts"], row["http_status"]) == ("dead", 2, 500), row

    dead = (await get_json(http, f"{platform.url}/v1/dlq?fn=calls"))["dead"]
    assert [(d["call_id"], d["attempts"], d["http_status"]) for d in dead] == [(call_id, 2, 500)]
    assert "500" in dead[0]["reason"]
    listed = (await get_json(http, f"{platform.url}/v1/calls?state=dead&fn=calls"))["calls"]
    assert [c["call_id"] for c in listed] == [call_id]
    shown = thaw(platform, key, "dlq")
    assert shown.returncode == 0 and call_id in shown.stdout, shown.stderr

    redrive = thaw(platform, key, "dlq", "redrive", call_id)
    assert redrive.returncode == 0 and call_id in redrive.stdout, redrive.stderr
    row = await settled(http, platform.url, call_id)
    assert (row["status"], row["attempts"], row["redrives"]) == ("succeeded", 1, 1), row
    assert (await get_json(http, f"{platform.url}/v1/dlq"))["dead"] == []
    one = thaw(platform, key, "calls", call_id)
    assert one.returncode == 0 and "succeeded" in one.stdout, one.stderr

    # redriving what is not there, or nothing, is one clear line and a non-zero exit
    again = thaw(platform, key, "dlq", "redrive", call_id)
    assert again.returncode != 0 and again.stderr.count("\n") == 1 and "not in the dead-letter queue" in again.stderr
    neither = thaw(platform, key, "dlq", "redrive")
    assert neither.returncode != 0 and "--fn" in neither.stderr and neither.stderr.count("\n") == 1
    unknown = thaw(platform, key, "calls", "c0000")
    assert unknown.returncode != 0 and "HTTP 404" in unknown.stderr and unknown.stderr.count("\n") == 1


async def test_no_call_is_lost_or_run_twice_when_the_gateway_is_killed_mid_way(platform, http):
    n = 500
    await deploy(http, platform.url, calls_fn(slow_ms=20, concurrency=16))
    started = time.monotonic()
    ids: list[str] = []
    for start in range(0, n, 50):
        answers = await asyncio.gather(*(queue(http, platform.url, "calls", b"%d" % i)
                                         for i in range(start, start + 50)))
        assert all(status == 202 for status, _ in answers), answers[:3]
        ids += [a["call_id"] for _, a in answers]

    async def some_done():
        rows = (await get_json(http, f"{platform.url}/v1/calls?state=succeeded&fn=calls&limit=1000"))["calls"]
        return len(rows) >= 50 and len(rows)
    done_at_kill = await eventually(some_done, 60, every_s=0.2, what="50 calls done")
    platform.kill("gateway")
    assert done_at_kill < n, "the kill came after every call was done: it proves nothing"
    platform.start("gateway")
    await eventually(lambda: _healthy(platform.url), 20, what="gateway back")

    async def all_final():
        rows = (await get_json(http, f"{platform.url}/v1/calls?fn=calls&limit=1000"))["calls"]
        return len(rows) == n and all(r["status"] in FINAL for r in rows) and rows
    rows = await eventually(all_final, 75, every_s=0.5, what="every call final")
    assert {r["call_id"] for r in rows} == set(ids), "none lost"
    assert all(r["status"] == "succeeded" for r in rows), [r for r in rows if r["status"] != "succeeded"][:3]
    async with http.post(f"{platform.url}/v1/functions/calls/invoke", data=b"report") as resp:
        report = json.loads(await resp.read())
    assert report["effects"] == {i: 1 for i in ids}, "each call's effect happened exactly once"
    print(f"500 calls, gateway killed after {done_at_kill} done, all settled in {time.monotonic() - started:.1f}s; "
          f"{sum(1 for v in report['attempts'].values() if v > 1)} ids reached the worker more than once")


async def test_two_gateways_share_the_queue_and_never_run_a_call_twice(platform, http):
    """A second gateway on the same bus pulls from the same durable: with nothing killed, every
    call reaches the worker exactly once, and both gateways ran some."""
    n = 200
    second_port = free_port()
    args = [sys.executable, "-m", "gateway", "--nats", platform.nats.url, "--redis", platform.redis_url,
            "--port", str(second_port), "--lease-ttl", "2", "--lease-hold", "0.3"]
    with open(platform.root / "gateway-2.log", "ab") as log:
        second = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    try:
        await eventually(lambda: _healthy(f"http://127.0.0.1:{second_port}"), 20, what="second gateway")
        await deploy(http, platform.url, calls_fn(slow_ms=20, concurrency=16))
        answers = await asyncio.gather(*(queue(http, platform.url, "calls", b"%d" % i) for i in range(n)))
        ids = [a["call_id"] for status, a in answers if status == 202]
        assert len(ids) == n

        async def all_succeeded():
            rows = (await get_json(http, f"{platform.url}/v1/calls?fn=calls&state=succeeded&limit=1000"))["calls"]
            return len(rows) == n
        await eventually(all_succeeded, 60, every_s=0.3, what="every call succeeded")
        async with http.post(f"{platform.url}/v1/functions/calls/invoke", data=b"report") as resp:
            report = json.loads(await resp.read())
        assert report["attempts"] == {i: 1 for i in ids}, "each call reached the worker once"
        ran = [await async_calls_counted(http, url) for url in (platform.url, f"http://127.0.0.1:{second_port}")]
        assert sum(ran) == n and all(ran), ran
    finally:
        second.terminate()
        second.wait(15)


async def async_calls_counted(http, url: str) -> int:
    """Async attempts a gateway ran, from its /metrics (edge "async")."""
    async with http.get(url + "/metrics") as resp:
        text = (await resp.read()).decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("thaw_gateway_calls") and 'edge="async"' in line)


async def test_calls_are_the_owning_tenants_only_and_bad_input_is_refused(platform, http, r):
    await deploy(http, platform.url, calls_fn())
    _, mine = await queue(http, platform.url, "calls", b"mine")
    other_key = await ApiKeys(r).create("other")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {other_key}"}) as other:
        assert (await call(other, platform.url, mine["call_id"]))[0] == 404
        status, body = await queue(other, platform.url, "calls", b"x")
        assert status == 404 and body["error"]["code"] == "unknown_function"
        assert (await get_json(other, f"{platform.url}/v1/calls"))["calls"] == []
    await settled(http, platform.url, mine["call_id"])

    cases = [  # (query, body, status, field)
        ("?async=2", b"x", 400, "async"),
        ("?async=1&async=1", b"x", 400, "async"),
        ("?async=yes", b"x", 400, "async"),
    ]
    for query, body, want, field in cases:
        status, answer = await queue(http, platform.url, "calls", body, query)
        assert (status, answer["error"]["field"]) == (want, field), (query, answer)
    status, answer = await queue(http, platform.url, "nope", b"x")
    assert status == 404 and "nope" in answer["error"]["message"]
    status, answer = await queue(http, platform.url, "calls", b"x" * ((1 << 20) - 100))
    assert status == 413 and answer["error"]["field"] == "body", answer
    async with http.post(f"{platform.url}/v1/functions/calls/invoke?async=1", data=b"x" * ((1 << 20) + 1)) as resp:
        assert resp.status == 413
    for path, want, field in [("/v1/calls/no.such", 404, ""), ("/v1/calls?state=weird", 400, "state"),
                              ("/v1/calls?limit=0", 400, "limit"), ("/v1/dlq?fn=Bad.Name", 400, "fn")]:
        async with http.get(platform.url + path) as resp:
            assert resp.status == want, path
            assert json.loads(await resp.read())["error"]["field"] == field
    for body, field in [(b"{}", "$.fn"), (b'{"fn": "calls", "ids": ["c1"]}', "$.fn"), (b'{"fnn": "x"}', "$.fnn"),
                        (b'{"ids": ["a.b"]}', "$.ids[0]")]:
        async with http.post(platform.url + "/v1/dlq/redrive", data=body) as resp:
            assert resp.status == 400, body
            assert json.loads(await resp.read())["error"]["field"] == field, body
    # a sync call still works, and nothing queued was lost on the way
    async with http.post(f"{platform.url}/v1/functions/calls/invoke?async=0", data=b"sync") as resp:
        assert (resp.status, await resp.read()) == (200, b"sync")


async def test_a_call_published_on_the_bus_is_checked_and_run(platform, http, api_key):
    """infer.async.<fn> with the key in Authorization: its id is bus-<sequence of its PubAck>. A
    bad key, or another tenant's function, ends failed with the reason; junk never crashes."""
    await deploy(http, platform.url, calls_fn())
    nc = await nats.connect(platform.nats.url)
    try:
        js = nc.jetstream()
        ack = await js.publish(subjects.infer_async("calls"), b"by bus", headers={"Authorization": f"Bearer {api_key}"})
        row = await settled(http, platform.url, f"bus-{ack.seq}")
        assert row["status"] == "succeeded" and json.loads(row["result"])["echo"] == "by bus", row
        unknown = await js.publish(subjects.infer_async("nope"), b"x", headers={"Authorization": f"Bearer {api_key}"})
        row = await settled(http, platform.url, f"bus-{unknown.seq}")
        assert (row["status"], row["http_status"]) == ("failed", 404) and "nope" in row["error"], row
        forged = await js.publish(subjects.infer_async("calls"), b"x", headers={"Authorization": "Bearer forged"})
        junk = await js.publish(subjects.infer_async_accepted("calls"), b"x", headers={"Thaw-Call": "{"})

        async def refused():
            try:
                msg = await js.get_last_msg(streams.INFER_RESULTS.name, subjects.infer_result(f"bus-{forged.seq}"))
            except nats.js.errors.NotFoundError:
                return None
            record = decode(msg.headers["Thaw-Call-State"], CallRecord)
            return record.status == "failed" and record
        record = await eventually(refused, 15, what="the forged claim refused")
        assert record.tenant == "" and record.http_status == 401 and "API key" in record.error

        async def drained():
            return (await js.stream_info(streams.INFER_ASYNC.name)).state.messages == 0
        await eventually(drained, 15, what="the work queue drained, junk included")
        assert junk.seq > 0
    finally:
        await nc.close()
    row = (await get_json(http, f"{platform.url}/v1/calls?fn=calls"))["calls"]
    assert all(r["status"] == "succeeded" for r in row)
