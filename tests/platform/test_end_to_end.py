"""The whole path on real processes: deploy, cold start, warm reuse, scale to zero, cold again."""

import json
import time

import nats

from tests.conftest import eventually
from tests.platform.conftest import deploy, echo_spec, gpu_usage, invoke


async def live_pods(http, url):
    async with http.get(url + "/v1/pods") as resp:
        return json.loads(await resp.read())["pods"]


async def test_first_call_cold_starts_then_warm_calls_reuse_the_worker(platform, http):
    await deploy(http, platform.url, echo_spec())
    assert await live_pods(http, platform.url) == []

    status, body, first_pod = await invoke(http, platform.url, "echo", b'{"n": 1}')
    assert (status, body) == (200, b'{"n": 1}')
    for n in range(2, 6):
        status, body, pod = await invoke(http, platform.url, "echo", json.dumps({"n": n}).encode())
        assert status == 200 and json.loads(body) == {"n": n}
        assert pod == first_pod, "a warm call must reuse the running worker"
    pods = await live_pods(http, platform.url)
    assert [p["pod"] for p in pods] == [first_pod]
    assert pods[0]["vram_mib"] == 2048 and len(pods[0]["gpus"]) == 1
    assert sorted(await gpu_usage(http, platform.url)) == [0, 2048]


async def test_nats_request_reply_invokes_the_same_function(platform, http, api_key):
    await deploy(http, platform.url, echo_spec())
    nc = await nats.connect(platform.nats.url)
    try:
        msg = await nc.request("infer.request.echo", b"over nats", timeout=30,
                               headers={"Authorization": f"Bearer {api_key}"})
        assert msg.data == b"over nats"
        assert msg.headers["Thaw-Status"] == "200"
        assert msg.headers["Thaw-Pod"].startswith("echo-")
    finally:
        await nc.close()


async def test_idle_worker_scales_to_zero_frees_vram_and_next_call_cold_starts(platform, http):
    await deploy(http, platform.url, echo_spec(idle_timeout_s=1.5))
    status, _, first_pod = await invoke(http, platform.url, "echo", b"a")
    assert status == 200
    assert sum(await gpu_usage(http, platform.url)) == 2048

    await eventually(lambda: _no_pods(http, platform.url), 20, what="the idle pod to stop")
    assert sum(await gpu_usage(http, platform.url)) == 0, "a stopped pod must free its vRAM"

    status, body, second_pod = await invoke(http, platform.url, "echo", b"b")
    assert (status, body) == (200, b"b")
    assert second_pod != first_pod, "after scale to zero the next call needs a new worker"


async def _no_pods(http, url):
    return await live_pods(http, url) == []


async def test_metrics_count_calls_by_edge_and_status_and_openapi_describes_the_api(platform, http, api_key):
    await deploy(http, platform.url, echo_spec())
    await invoke(http, platform.url, "echo", b"a")
    await invoke(http, platform.url, "nope", b"a")
    nc = await nats.connect(platform.nats.url)
    try:
        await nc.request("infer.request.echo", b"b", timeout=20, headers={"Authorization": f"Bearer {api_key}"})
    finally:
        await nc.close()
    async with http.get(platform.url + "/metrics") as resp:
        text = await resp.text()
    assert 'thaw_gateway_calls_total{edge="http",fn="echo",status="200"} 1.0' in text
    assert 'fn="nope"' not in text, "a tenant sees metrics of its own functions only"
    assert 'thaw_gateway_calls_total{edge="nats",fn="echo",status="200"} 1.0' in text
    async with http.get(platform.url + "/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/functions/{name}/invoke" in doc["paths"]
    assert "max_pods" in doc["components"]["schemas"]["Scaling"]["properties"]


async def test_a_streamed_answer_is_passed_on_as_it_comes(platform, http, api_key):
    spec = echo_spec()
    spec["invoke_path"] = "/stream"
    spec["env"] = {"ECHO_STREAM_EVENTS": "3", "ECHO_STREAM_GAP_S": "0.6"}
    await deploy(http, platform.url, spec)
    assert (await invoke(http, platform.url, "echo", b"warm up"))[0] == 200

    arrivals, text = [], b""
    async with http.post(platform.url + "/v1/functions/echo/invoke", data=b"hi") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        async for chunk in resp.content.iter_any():
            arrivals.append(time.monotonic())
            text += chunk
    assert text == b"data: 0 hi\n\ndata: 1 hi\n\ndata: 2 hi\n\ndata: [DONE]\n\n"
    assert arrivals[-1] - arrivals[0] > 0.9, "the first event must arrive before the worker has finished"

    chat = json.dumps({"model": "echo", "stream": True}).encode()
    async with http.post(platform.url + "/v1/chat/completions", data=chat) as resp:
        assert resp.status == 200
        assert (await resp.read()).endswith(b"data: [DONE]\n\n")
    nc = await nats.connect(platform.nats.url)
    try:
        msg = await nc.request("infer.request.echo", b"bus", timeout=20, headers={"Authorization": f"Bearer {api_key}"})
        assert msg.data.endswith(b"data: [DONE]\n\n") and b"data: 2 bus" in msg.data, "the bus gets it whole"
    finally:
        await nc.close()
    # The slot went back once the stream ended: a normal call still gets a worker.
    assert (await invoke(http, platform.url, "echo", b"after"))[0] == 200
