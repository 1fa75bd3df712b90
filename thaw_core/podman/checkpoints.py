"""Checkpoint and restore containers through Podman's own API (libpod endpoints).

The Docker-compatible API has no working checkpoint path on Podman (it answers 404), so these
two calls use ``/v4.0.0/libpod/containers/{name}/checkpoint|restore`` on the same socket the
container runtime uses. Under the hood runc calls CRIU (infra/install-criu.sh).

- `checkpoint` exports a running container (left running) to a tar file: CRIU images plus the
  container's config and root-filesystem changes. The snapshotter stores that file in its tiers.
- `restore` imports such a tar as a *new* container with its own name, network namespace
  (a fresh IP; the original one may still be in use) and published port, so any number of
  copies of one checkpoint serve side by side on different host ports.
Both raise `PodmanCheckpointError` carrying podman's own message; on a restore error the agent
cold-starts the pod.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agents.runtime.base import WorkerHandle
from agents.runtime.container import container_name

API = "http://podman/v4.0.0/libpod"
CHUNK = 1 << 20


@dataclass
class PodmanCheckpointError(Exception):
    what: str  # "checkpoint" | "restore"
    container: str
    status: int
    message: str

    def __str__(self) -> str:
        return f"podman {self.what} of {self.container} failed (HTTP {self.status}): {self.message}"


@dataclass(frozen=True, slots=True)
class CheckpointFile:
    path: Path
    size_bytes: int
    duration_s: float


def _flag(b: bool) -> str:
    return "true" if b else "false"


class PodmanCheckpoints:
    def __init__(self, socket: Path, timeout_s: float = 300.0):
        self._socket = socket
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self._socket)),
                                     timeout=self._timeout)

    async def checkpoint(self, container: str, dest: Path, *, leave_running: bool = True,
                         tcp_established: bool = True) -> CheckpointFile:
        """Export a checkpoint of `container` to `dest` (written to a temporary name, then
        renamed). `tcp_established` lets it succeed while a client holds a connection open."""
        params = {"export": "true", "leaveRunning": _flag(leave_running),
                  "tcpEstablished": _flag(tcp_established)}
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        t0 = time.monotonic()
        async with self._session() as s:
            async with s.post(f"{API}/containers/{container}/checkpoint", params=params) as r:
                if r.status != 200:
                    raise PodmanCheckpointError("checkpoint", container, r.status, await _message(r))
                with open(tmp, "wb") as f:
                    async for chunk in r.content.iter_chunked(CHUNK):
                        f.write(chunk)
        tmp.replace(dest)
        return CheckpointFile(path=dest, size_bytes=dest.stat().st_size,
                              duration_s=time.monotonic() - t0)

    async def restore(self, archive: Path, *, pod: str, host_port: int, container_port: int,
                      tcp_established: bool = False) -> WorkerHandle:
        """Import `archive` as container ``thaw-<pod>`` publishing 127.0.0.1:host_port ->
        container_port, and return its handle once podman reports it running.

        The restored copy gets a new IP and MAC (the checkpoint's may still be in use) and, by
        default, connections that were open at checkpoint time are not restored.
        """
        name = container_name(pod)
        params = {"import": "true", "name": name, "ignoreStaticIP": "true",
                  "ignoreStaticMAC": "true", "tcpEstablished": _flag(tcp_established),
                  "publishPorts": f"127.0.0.1:{host_port}:{container_port}"}
        async with self._session() as s:
            with open(archive, "rb") as body:
                async with s.post(f"{API}/containers/{name}/restore", params=params, data=body,
                                  headers={"Content-Type": "application/x-tar"}) as r:
                    if r.status != 200:
                        raise PodmanCheckpointError("restore", name, r.status, await _message(r))
                    info = await r.json(content_type=None)
        return WorkerHandle(pod=pod, runtime="container", ref=info["Id"],
                            endpoint=f"http://127.0.0.1:{host_port}")


async def _message(r: aiohttp.ClientResponse) -> str:
    text = await r.text()
    try:
        body = json.loads(text)
        return body.get("message") or body.get("cause") or text
    except ValueError:
        return text[:500]
