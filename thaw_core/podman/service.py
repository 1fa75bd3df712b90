"""Make sure a Podman API service answers on a unix socket, starting one if none does.

Rootful `podman system service` is what the container runtime and the checkpoint calls talk to.
It is started detached (own session) and left running when the agent exits: containers do not
depend on it, and the next agent reuses it. Install podman with `sudo infra/install-podman.sh`.
"""

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp

from thaw_core import spawn

INSTALL_HINT = "install it with `sudo infra/install-podman.sh`"


class PodmanUnavailable(RuntimeError):
    """No podman binary, or its API service did not come up. `hint` says what to do."""

    def __init__(self, why: str, hint: str = INSTALL_HINT):
        super().__init__(f"podman API unavailable: {why}; {hint}")
        self.why, self.hint = why, hint


async def ping(socket: Path, timeout_s: float = 1.0) -> bool:
    """True when something answers GET /_ping with OK on `socket`."""
    if not socket.exists():
        return False
    try:
        conn = aiohttp.UnixConnector(path=str(socket))
        async with aiohttp.ClientSession(connector=conn) as s:
            async with s.get("http://podman/_ping", timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                return r.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


async def ensure_service(socket: Path, start_timeout_s: float = 15.0) -> None:
    """Return once a podman API answers on `socket`; start `podman system service` if needed.

    Idempotent. Raises PodmanUnavailable when podman is not installed or does not come up.
    """
    if await ping(socket):
        return
    podman = shutil.which("podman")
    if podman is None:
        raise PodmanUnavailable("no podman on PATH")
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)  # a stale socket from a dead service would refuse connects
    log = open(socket.with_suffix(".log"), "ab")
    try:
        proc = spawn.start(
            [podman, "system", "service", "--time=0", f"unix://{socket}"], stdout=log, stderr=log, new_session=True,
            env={**os.environ, "PATH": "/usr/local/sbin:/usr/local/bin:" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
        )
    finally:
        log.close()
    deadline = asyncio.get_running_loop().time() + start_timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await ping(socket):
            return
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    raise PodmanUnavailable(f"`podman system service` on {socket} did not answer "
                            f"(see {socket.with_suffix('.log')})", hint="run `podman info` to see why")
