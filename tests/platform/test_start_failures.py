"""A worker that does not start says why, at once, and a function that keeps crashing is slowed
and marked degraded until it is fixed (issue 12)."""

import json
import time

import nats

from bus_schemas.codec import decode
from bus_schemas.pods import PodState, PodStateChanged
from thaw_core.store.start_failures import DEGRADED_AFTER

from tests.conftest import eventually
from tests.platform.conftest import deploy, echo_spec, invoke, thaw_ls

EXITS_AT_ONCE = ["{python}", "-c", "import sys; print('weights not found at /models/m.bin', flush=True); sys.exit(3)"]
ANSWERS_500 = ["{python}", "-c", """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500); self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
"""]


def spec_running(command: list[str], **scaling) -> dict:
    spec = echo_spec(**scaling)
    spec["command"] = command
    return spec


async def call(http, url: str, fn: str = "echo") -> tuple[int, str | None, str, float]:
    started = time.monotonic()
    async with http.post(f"{url}/v1/functions/{fn}/invoke", data=b"x") as resp:
        body = json.loads(await resp.read())
        return resp.status, resp.headers.get("Retry-After"), body["error"]["message"], time.monotonic() - started


async def failed_pods(http, url: str) -> list[dict]:
    async with http.get(url + "/v1/pods") as resp:
        return json.loads(await resp.read())["failed"]


async def function_row(http, url: str, fn: str = "echo") -> dict:
    async with http.get(url + "/v1/functions") as resp:
        return next(f for f in json.loads(await resp.read())["functions"] if f["name"] == fn)


async def test_a_worker_that_exits_at_once_gets_the_caller_a_503_with_its_exit_code_and_output(platform, http):
    await deploy(http, platform.url, spec_running(EXITS_AT_ONCE, start_timeout_s=20))
    status, retry_after, message, took_s = await call(http, platform.url)
    assert status == 503 and retry_after
    assert took_s < 10, f"the 503 must come when the pod fails, not at start_timeout_s (took {took_s:.1f}s)"
    assert "exit code 3" in message and "weights not found at /models/m.bin" in message, message
    [failed] = await failed_pods(http, platform.url)
    assert "exit code 3" in failed["reason"] and "weights not found" in failed["reason"]
    assert "exit code 3" in thaw_ls(http, platform)


async def test_a_worker_that_answers_500_fails_after_start_timeout_saying_what_the_probe_got(platform, http):
    await deploy(http, platform.url, spec_running(ANSWERS_500, start_timeout_s=2))
    status, retry_after, message, took_s = await call(http, platform.url)
    assert status == 503 and retry_after
    assert took_s >= 2, took_s
    assert "GET /healthz: HTTP 500" in message, message
    assert "not healthy within start_timeout_s=2" in message, message
    [failed] = await failed_pods(http, platform.url)
    assert "GET /healthz: HTTP 500" in failed["reason"]


async def test_a_crash_loop_backs_off_is_marked_degraded_and_a_fixed_redeploy_clears_it(platform, http):
    starts: list[float] = []
    nc = await nats.connect(platform.nats.url)

    async def on_state(msg):
        event = decode(msg.data, PodStateChanged)
        if event.fn == "echo" and event.state == PodState.PENDING:
            starts.append(time.monotonic())
    await nc.subscribe("pod.state.*", cb=on_state)
    try:
        # min_pods=1: placement itself keeps starting pods, as fast as it lets itself
        await deploy(http, platform.url, spec_running(EXITS_AT_ONCE, min_pods=1, max_pods=1, start_timeout_s=3))

        async def degraded():
            return (await function_row(http, platform.url))["status"] == "degraded"
        await eventually(degraded, 45, every_s=0.2, what=f"{DEGRADED_AFTER} failed starts to mark it degraded")
        row = await function_row(http, platform.url)
        assert f"{DEGRADED_AFTER} pods in a row failed to start" in row["degraded_reason"]
        assert "exit code 3" in row["degraded_reason"]
        assert "crash loop" in thaw_ls(http, platform)
        gaps = [b - a for a, b in zip(starts, starts[1:])][:DEGRADED_AFTER - 1]
        assert len(gaps) == DEGRADED_AFTER - 1, starts
        assert gaps == sorted(gaps) and gaps[-1] > 3 * gaps[0], f"pods must start ever later: gaps {gaps}"
        status, retry_after, message, _ = await call(http, platform.url)
        assert status == 503 and "starts in a row failed" in message, message
        assert 2 < int(retry_after) <= 60, f"Retry-After says when the backoff lets a pod start: {retry_after}"

        await deploy(http, platform.url, echo_spec(min_pods=1, max_pods=1))
        status, body, _ = await invoke(http, platform.url, "echo", b"fixed")
        assert (status, body) == (200, b"fixed")
        assert (await function_row(http, platform.url))["status"] == "ok"
    finally:
        await nc.close()
