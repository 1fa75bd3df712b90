"""Async calls waiting in the INFER_ASYNC work queue are demand: placement starts pods for them,
not only for the calls a gateway has taken (tests/platform/test_async_calls.py for the calls
themselves)."""

import re

import pytest

from bus_schemas.pods import PodState
from thaw_core import servers
from thaw_core.store.pods import Pods

from tests.conftest import eventually
from tests.platform.conftest import deploy, running
from tests.platform.harness import Harness
from tests.platform.test_async_calls import calls_fn, queue, settled

CALLS = 40
SERVING = {PodState.IDLE, PodState.BUSY}


class OneAtATimeGateway(Harness):
    """A gateway that runs one async call at a time: every other call waits in the stream,
    where no gateway's waiting calls would ever ask for a pod for it."""

    def args(self, name: str) -> list[str]:
        extra = ["--async-in-flight", "1"] if name == "gateway" else []
        return [*super().args(name), *extra]


@pytest.fixture
async def narrow_platform(tmp_path, redis_url, request):
    async with running(OneAtATimeGateway(tmp_path, servers.start_nats(tmp_path / "nats"), redis_url), request) as h:
        yield h


async def queued_in_metrics(http, url: str, fn: str) -> int:
    """The gateway's gauge of `fn`'s async calls in the work queue."""
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    found = re.search(rf'^thaw_async_queued_calls{{fn="{fn}"}} (\S+)$', text, re.M)
    assert found, f"no thaw_async_queued_calls for {fn} in:\n{text}"
    return int(float(found.group(1)))


async def test_an_async_backlog_starts_pods_up_to_max_pods_before_it_drains(narrow_platform, http, r):
    h = narrow_platform
    spec = calls_fn("backlog", slow_ms=500, concurrency=1)
    spec["resources"]["cpu_milli"] = 250  # four pods fit a two-core node
    spec["scaling"]["max_pods"] = 4
    await deploy(http, h.url, spec)
    ids = []
    for i in range(CALLS):
        status, queued = await queue(http, h.url, "backlog", f"call {i}".encode())
        assert status == 202, queued
        ids.append(queued["call_id"])

    async def four_serving():
        pods = await Pods(r).live("backlog")
        return len([p for p in pods if p.state in SERVING]) == 4
    await eventually(four_serving, 30, every_s=0.2, what="four serving pods of backlog")
    # One call at a time at half a second each: most of the backlog is still there.
    assert await queued_in_metrics(http, h.url, "backlog") >= CALLS // 4

    rows = [await settled(http, h.url, call_id, timeout_s=60) for call_id in ids]
    assert [row["status"] for row in rows] == ["succeeded"] * CALLS
    assert len(await Pods(r).live("backlog")) == 4, "never more than max_pods"
    assert await queued_in_metrics(http, h.url, "backlog") == 0
