import asyncio
import contextlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from thaw_core import servers
from thaw_core.store.apikeys import ApiKeys

from tests.conftest import eventually
from tests.platform.harness import Harness

ECHO = str(Path(__file__).resolve().parents[2] / "examples" / "echo" / "worker.py")


def echo_spec(**scaling) -> dict:
    # cpu_milli is the worker's real CPU limit (its cgroup): at 100, aiohttp's import alone takes seconds
    return {"name": "echo", "command": ["{python}", ECHO], "resources": {"vram_mib": 2048, "cpu_milli": 500,
            "memory_mib": 128}, "scaling": {"max_pods": 2, "concurrency": 4, "idle_timeout_s": 600,
            "start_timeout_s": 20, **scaling}}


@contextlib.asynccontextmanager
async def running(h: Harness, request):
    """`h` with placement, an agent and a gateway started; stopped after, its logs printed when
    the test failed."""
    for name in ("placement", "agent", "gateway"):
        h.start(name)
    try:
        await eventually(lambda: _healthy(h.url), 20, what="gateway /healthz")
        yield h
    finally:
        h.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(h.logs())


@pytest.fixture
async def platform(tmp_path, redis_url, request):
    async with running(Harness(tmp_path, servers.start_nats(tmp_path / "nats"), redis_url), request) as h:
        yield h


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1):
            return True
    except OSError:
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
async def api_key(r):
    return await ApiKeys(r).create("default")


@pytest.fixture
async def http(api_key):
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {api_key}"}) as session:
        yield session


async def deploy(http: aiohttp.ClientSession, url: str, spec: dict) -> None:
    async with http.post(url + "/v1/functions", json=spec) as resp:
        assert resp.status == 201, await resp.text()


def thaw_ls(http: aiohttp.ClientSession, h: Harness) -> str:
    """`thaw ls` as a user runs it, with the session's key; its output."""
    key = http.headers["Authorization"].split()[1]
    done = subprocess.run([sys.executable, "-m", "thaw.cli", "--url", h.url, "--key", key, "ls"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def invoke(http: aiohttp.ClientSession, url: str, fn: str, body: bytes) -> tuple[int, bytes, str]:
    async with http.post(f"{url}/v1/functions/{fn}/invoke", data=body,
                         timeout=aiohttp.ClientTimeout(total=60)) as resp:
        return resp.status, await resp.read(), resp.headers.get("Thaw-Pod", "")


async def gpu_usage(http, url: str) -> list[int]:
    async with http.get(url + "/v1/nodes") as resp:
        nodes = json.loads(await resp.read())["nodes"]
    return [g["vram_reserved_mib"] for n in nodes for g in n["gpus"]]


__all__ = ["asyncio"]
