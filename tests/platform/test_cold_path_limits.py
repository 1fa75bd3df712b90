"""A cold call waits for a worker, but never forever: at the deadline it gets 503 and the reason."""

import json

from tests.conftest import eventually
from tests.platform.conftest import deploy, echo_spec, gpu_usage


async def call(http, url, fn):
    async with http.post(f"{url}/v1/functions/{fn}/invoke", data=b"x") as resp:
        return resp.status, resp.headers.get("Retry-After"), json.loads(await resp.read())


async def test_a_function_no_gpu_can_hold_answers_503_saying_why(platform, http):
    spec = echo_spec(start_timeout_s=2)
    spec["resources"]["vram_mib"] = 100_000
    await deploy(http, platform.url, spec)
    status, retry_after, body = await call(http, platform.url, "echo")
    assert status == 503 and retry_after
    assert body["error"]["code"] == "no_worker"
    assert "placement" in body["error"]["message"], body


async def test_a_worker_that_never_becomes_healthy_fails_and_frees_its_slice(platform, http):
    spec = echo_spec(start_timeout_s=2)
    spec["command"] = ["{python}", "-c", "import time; time.sleep(120)"]
    await deploy(http, platform.url, spec)
    status, retry_after, body = await call(http, platform.url, "echo")
    assert status == 503 and retry_after and "no worker became ready" in body["error"]["message"]

    async def freed():
        return sum(await gpu_usage(http, platform.url)) == 0
    await eventually(freed, 10, what="the failed pod to release its GPU slice")
