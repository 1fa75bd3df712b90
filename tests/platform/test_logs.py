"""`thaw logs` and GET /v1/functions/{fn}/logs: a worker's log, read by the agent of its node over
`logs.read.<node>` and handed out by the gateway to the function's owner only; a restored
worker's lines are found in the log it kept from its snapshot. Real processes throughout."""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from thaw_core.store.apikeys import ApiKeys

from tests.conftest import eventually
from tests.platform.conftest import deploy, invoke
from tests.platform.harness import Harness
from tests.platform.test_snapshots_e2e import Watch, snap_platform  # noqa: F401

CHATTY = str(Path(__file__).resolve().parent / "chatty_worker.py")


def chatty_spec(**scaling) -> dict:
    return {"name": "chatty", "command": ["{python}", CHATTY], "resources": {"cpu_milli": 500, "memory_mib": 128},
            "scaling": {"max_pods": 1, "concurrency": 4, "idle_timeout_s": 600, "start_timeout_s": 20, **scaling}}


async def logs(http, h: Harness, fn: str = "chatty", **query) -> tuple[int, dict]:
    async with http.get(f"{h.url}/v1/functions/{fn}/logs", params={k: str(v) for k, v in query.items()}) as resp:
        return resp.status, await resp.json()


def thaw(h: Harness, http, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
    key = http.headers["Authorization"].split()[1]
    return subprocess.run([sys.executable, "-m", "thaw.cli", "--url", h.url, "--key", key, *args],
                          capture_output=True, text=True, timeout=timeout_s)


async def test_the_owner_reads_a_workers_log_from_its_node_and_nobody_else_can(platform, http, r):
    await deploy(http, platform.url, chatty_spec())
    status, _, pod = await invoke(http, platform.url, "chatty", b"hello-1")
    assert status == 200

    status, chunk = await logs(http, platform)
    assert status == 200, chunk
    assert (chunk["pod"], chunk["node"], chunk["shared_with"]) == (pod, platform.node, "")
    assert chunk["text"] == "started\ngot hello-1\n" and chunk["next_offset"] == chunk["size"] == len(chunk["text"])
    status, tail = await logs(http, platform, offset=-10)
    assert (status, tail["text"], tail["offset"]) == (200, chunk["text"][-10:], chunk["size"] - 10)

    cli = thaw(platform, http, "logs", "chatty")
    assert (cli.returncode, cli.stdout) == (0, "started\ngot hello-1\n"), cli.stderr
    assert f"pod {pod} on node {platform.node}" in cli.stderr

    other = await ApiKeys(r).create("someone-else")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {other}"}) as stranger:
        assert (await logs(stranger, platform))[0] == 404, "another tenant's function does not exist for it"
    for bad, field in (({"offset": "x"}, "offset"), ({"max_bytes": "0"}, "max_bytes"), ({"pod": "echo-1"}, "pod")):
        status, body = await logs(http, platform, **bad)
        assert (status // 100, body["error"]["field"]) == (4, field), body


async def test_thaw_logs_follow_prints_lines_as_the_worker_writes_them(platform, http):
    await deploy(http, platform.url, chatty_spec())
    assert (await invoke(http, platform.url, "chatty", b"first"))[0] == 200
    key = http.headers["Authorization"].split()[1]
    follow = subprocess.Popen([sys.executable, "-m", "thaw.cli", "--url", platform.url, "--key", key,
                               "logs", "chatty", "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.sleep(1.5)
        for i in range(3):
            assert (await invoke(http, platform.url, "chatty", f"later-{i}".encode()))[0] == 200
        await asyncio.sleep(2.5)
    finally:
        follow.terminate()
        out, err = follow.communicate(timeout=10)
    assert out.startswith("started\ngot first\n") and out.endswith("got later-0\ngot later-1\ngot later-2\n"), (out, err)


async def test_a_restored_workers_lines_are_in_the_log_it_kept_from_its_snapshot(snap_platform, http):  # noqa: F811
    h = snap_platform
    watch = await Watch().start(h.nats.url)
    try:
        await deploy(http, h.url, chatty_spec(idle_timeout_s=2))
        _, _, first = await invoke(http, h.url, "chatty", b"cold")
        await eventually(lambda: watch.ready, 30, what="snapshot.ready.chatty")
        await eventually(lambda: "stopped" in watch.states_of(first), 30, what=f"{first} to scale to zero")
        await deploy(http, h.url, chatty_spec(idle_timeout_s=600))
        _, _, second = await invoke(http, h.url, "chatty", b"warm-again")
        assert "restoring" in watch.states_of(second) and "starting" not in watch.states_of(second)

        status, chunk = await logs(http, h, pod=second)
        assert status == 200, chunk
        # one file: the first pod's lines, then the restored copy's
        assert chunk["shared_with"] == first and chunk["text"] == "started\ngot cold\ngot warm-again\n", chunk
        status, old = await logs(http, h, pod=first)
        # the same file (grown since, maybe: the restored worker still writes to it)
        assert (status, old["state"]) == (200, "stopped") and old["text"].startswith(chunk["text"])
    finally:
        await watch.nc.close()
