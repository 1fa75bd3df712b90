"""The one client of a node's podman API socket.

Both users of podman go through it: the agent's container runtime (create, start, stop, list:
the Docker-compatible API, through aiodocker) and the snapshotter's checkpoints (checkpoint,
restore, rename: podman's own libpod endpoints, which the Docker API lacks). One
`aiodocker.Docker` holds the socket's session, and libpod calls ride that same session, so a
process keeps one connection pool to podman, one place that starts the service, one timeout.
"""

from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiodocker import DockerError as DockerError  # what the Docker-compatible calls raise

from thaw_core.podman.service import ensure_service

LIBPOD = "http://podman/v4.0.0/libpod"  # the host is ignored on a unix socket
DEFAULT_TIMEOUT_S = 300.0  # a checkpoint export or import of a large container takes minutes


class Podman:
    def __init__(self, socket: Path, *, start_service: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.socket, self.start_service = socket, start_service
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._docker: aiodocker.Docker | None = None

    async def docker(self) -> aiodocker.Docker:
        """The Docker-compatible API. The first call starts `podman system service` on the
        socket when none answers (PodmanUnavailable says how to install podman)."""
        if self._docker is None:
            if self.start_service:
                await ensure_service(self.socket)
            self._docker = aiodocker.Docker(url=f"unix://{self.socket}", timeout=self._timeout)
        return self._docker

    async def libpod(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """Send `method` to the libpod endpoint `path` (e.g. "/containers/x/checkpoint"). The
        response is the caller's to read and release (use it with `async with`)."""
        docker = await self.docker()
        return await docker.session.request(method, f"{LIBPOD}{path}", **kwargs)

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None
