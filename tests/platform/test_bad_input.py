"""Client mistakes get a clear 4xx (or an error reply on the bus) and the platform keeps serving."""

import asyncio
import json
from pathlib import Path

import aiohttp
import nats

from tests.platform.conftest import deploy, echo_spec, invoke


async def post(http, url, path, body: bytes, headers=None):
    async with http.post(url + path, data=body, headers=headers or {"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()


BAD_SPECS = [
    (b"{not json", 400, "$", "not valid JSON"),
    (b'{"name": "echo", "command": ["x"], "gpu": 1}', 400, "$.gpu", "unknown field"),
    (b'{"name": "echo", "command": ["x"], "resources": {"vram": 1}}', 400, "$.resources.vram", "unknown field"),
    (b'{"name": "Echo!", "command": ["x"]}', 400, "$.name", "matching regex"),
    (b'{"name": "echo", "command": ["x"], "scaling": {"max_pods": 0}}', 400, "$.scaling.max_pods", ">= 1"),
    (b'{"name": "echo", "command": ["x"], "resources": {"vram_mib": "lots"}}', 400, "$.resources.vram_mib", "Expected `int`"),
    (b'{"name": "echo"}', 400, "$.command", "exactly one of"),
    (b'{"name": "echo", "command": ["x"], "env": {"CUDA_VISIBLE_DEVICES": "0"}}', 400, "$.env.CUDA_VISIBLE_DEVICES", "set by the platform"),
    (b'{"name": "echo", "command": ["x"], "placement_policy": "magic"}', 400, "$.placement_policy", "unknown policy"),
    (b'{"name": "echo", "command": ["x"], "restore": "fast"}', 400, "$.restore", "eager|lazy|auto"),
    (b'{"name": "echo", "command": ["x"], "tenant": "someone-else"}', 403, "$.tenant", "tenant"),
]


async def test_a_bad_function_spec_is_refused_naming_the_field(platform, http):
    for body, status, field, reason in BAD_SPECS:
        got_status, got = await post(http, platform.url, "/v1/functions", body)
        assert got_status == status, (body, got)
        assert got["error"]["field"] == field, (body, got)
        assert reason in got["error"]["message"], (body, got)
    async with http.get(platform.url + "/v1/functions") as resp:
        assert (await resp.json())["functions"] == [], "nothing half-deployed"


async def test_bad_calls_get_4xx_and_the_platform_keeps_serving(platform, http, api_key):
    await deploy(http, platform.url, echo_spec())
    assert (await invoke(http, platform.url, "echo", b"ok"))[0] == 200

    status, err = await post(http, platform.url, "/v1/functions/nope/invoke", b"x")
    assert status == 404 and err["error"]["code"] == "unknown_function"

    status, err = await post(http, platform.url, "/v1/functions/echo/invoke", b"x" * (2 << 20))
    assert status == 413 and "max_body_bytes" in err["error"]["message"]

    for auth in ({}, {"Authorization": "Bearer thaw_wrong"}, {"Authorization": "Basic abc"}):
        async with aiohttp.ClientSession() as anon:
            async with anon.post(platform.url + "/v1/functions/echo/invoke", data=b"x", headers=auth) as resp:
                assert resp.status == 401
                assert "Authorization: Bearer" in (await resp.json())["error"]["message"]

    status, err = await post(http, platform.url, "/v1/embeddings", b"[1, 2")
    assert status == 400 and err["error"]["code"] == "invalid_json"
    status, err = await post(http, platform.url, "/v1/embeddings", b'{"input": "no model"}')
    assert status == 400 and err["error"]["field"] == "$.model"

    async with http.get(platform.url + "/v1/no-such-path") as resp:
        assert resp.status == 404 and "error" in await resp.json()

    assert (await invoke(http, platform.url, "echo", b"still ok"))[:2] == (200, b"still ok")


async def test_a_function_of_another_tenant_is_invisible(platform, http, r):
    from thaw_core.store.apikeys import ApiKeys

    await deploy(http, platform.url, echo_spec())
    other_key = await ApiKeys(r).create("other")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {other_key}"}) as other:
        status, body, _ = await invoke(other, platform.url, "echo", b"x")
        assert status == 404
        async with other.get(platform.url + "/v1/functions") as resp:
            assert (await resp.json())["functions"] == []
        async with other.post(platform.url + "/v1/functions", json=echo_spec()) as resp:
            assert resp.status == 409 and (await resp.json())["error"]["field"] == "$.name"


async def test_bad_requests_over_nats_get_error_replies(platform, http, api_key):
    await deploy(http, platform.url, echo_spec())
    nc = await nats.connect(platform.nats.url)
    try:
        msg = await nc.request("infer.request.echo", b"x", timeout=10)
        assert msg.headers["Thaw-Status"] == "401"
        assert json.loads(msg.data)["error"]["code"] == "unauthorized"

        auth = {"Authorization": f"Bearer {api_key}"}
        msg = await nc.request("infer.request.nope", b"x", timeout=10, headers=auth)
        assert msg.headers["Thaw-Status"] == "404"

        msg = await nc.request("infer.request.echo", b"not json, and no content type", timeout=30, headers=auth)
        assert msg.headers["Thaw-Status"] == "200", "the body is the function's business, passed as is"

        msg = await nc.request("infer.request.echo", b"fine", timeout=30, headers=auth)
        assert (msg.headers["Thaw-Status"], msg.data) == ("200", b"fine")
    finally:
        await nc.close()


async def test_a_content_type_that_cannot_reach_a_worker_gets_400_and_leaks_nothing(platform, http, api_key):
    """It is passed on to the worker's HTTP request: non-ASCII over NATS once gave a 500 and left
    one gateway fd behind per call."""
    await deploy(http, platform.url, echo_spec())
    auth = {"Authorization": f"Bearer {api_key}"}
    nc = await nats.connect(platform.nats.url)
    gateway_fds = Path(f"/proc/{platform.procs['gateway'].pid}/fd")
    try:
        msg = await nc.request("infer.request.echo", b"warm", timeout=30, headers=auth)
        assert msg.headers["Thaw-Status"] == "200"
        before = len(list(gateway_fds.iterdir()))
        for _ in range(50):
            msg = await nc.request("infer.request.echo", b"x", timeout=10,
                                   headers={**auth, "Content-Type": "text/plain; charset=ütf-8 ✓"})
            error = json.loads(msg.data)["error"]
            assert (msg.headers["Thaw-Status"], error["field"]) == ("400", "Content-Type"), msg.data
            assert "printable ASCII" in error["message"]
        assert len(list(gateway_fds.iterdir())) <= before + 2
        msg = await nc.request("infer.request.echo", b"still fine", timeout=30, headers=auth)
        assert (msg.headers["Thaw-Status"], msg.data) == ("200", b"still fine")
    finally:
        await nc.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.http_port)
    writer.write(b"POST /v1/functions/echo/invoke HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + api_key.encode()
                 + b"\r\nContent-Type: text/\xe9t\xe9\r\nContent-Length: 1\r\n\r\nx")
    status_line = await reader.readline()
    assert status_line.split()[1] == b"400", status_line
    writer.close()
