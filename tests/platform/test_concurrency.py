"""Bursts against a small function: every call is answered, no worker is over-subscribed."""

import asyncio
import json

import aiohttp

from tests.platform.conftest import deploy, echo_spec, gpu_usage, invoke


async def worker_stats(pods: list[dict]) -> list[dict]:
    async with aiohttp.ClientSession() as s:
        out = []
        for p in pods:
            async with s.get(p["endpoint"] + "/stats") as resp:
                out.append(await resp.json())
        return out


async def test_200_concurrent_calls_against_max_2_concurrency_4(platform, http):
    spec = echo_spec(max_pods=2, concurrency=4)
    spec["env"] = {"ECHO_DELAY_S": "0.05"}
    await deploy(http, platform.url, spec)

    results = await asyncio.gather(*(invoke(http, platform.url, "echo", str(i).encode()) for i in range(200)))

    by_status: dict[int, int] = {}
    for i, (status, body, _) in enumerate(results):
        by_status[status] = by_status.get(status, 0) + 1
        if status == 200:
            assert body == str(i).encode(), "each caller gets its own answer"
        else:
            assert status in (429, 503), status
            assert json.loads(body)["error"]["message"], "a refusal says why"
    assert by_status.get(200, 0) >= 150, by_status

    async with http.get(platform.url + "/v1/pods") as resp:
        pods = json.loads(await resp.read())["pods"]
    assert 1 <= len(pods) <= 2
    stats = await worker_stats(pods)
    assert all(s["max_in_flight"] <= 4 for s in stats), stats
    assert sum(s["served"] for s in stats) == by_status[200]
    assert sum(await gpu_usage(http, platform.url)) == 2048 * len(pods)


async def test_a_full_queue_answers_429_with_retry_after(platform, http):
    spec = echo_spec(max_pods=1, concurrency=1, max_queue=5)
    spec["env"] = {"ECHO_DELAY_S": "0.2"}
    await deploy(http, platform.url, spec)
    assert (await invoke(http, platform.url, "echo", b"warm"))[0] == 200

    async def call(i):
        async with http.post(f"{platform.url}/v1/functions/echo/invoke", data=b"x") as resp:
            return resp.status, resp.headers.get("Retry-After"), await resp.read()

    results = await asyncio.gather(*(call(i) for i in range(30)))
    refused = [r for r in results if r[0] == 429]
    assert refused, "30 calls against one slot and a queue of 5 must refuse some"
    assert all(r[1] for r in refused), "429 carries Retry-After"
    assert all(json.loads(r[2])["error"]["code"] == "overloaded" for r in refused)
    assert all(r[0] in (200, 429) for r in results)
