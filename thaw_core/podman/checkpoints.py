"""Checkpoint, restore and stage containers through Podman's own API (libpod endpoints).

The Docker-compatible API has no working checkpoint path on Podman (it answers 404), so these
calls use ``/v4.0.0/libpod/containers/...`` through the node's one podman client
(thaw_core/podman/client.py), on the session the container runtime's calls use.
Under the hood runc calls CRIU (infra/install-criu.sh).

- `checkpoint` exports a running container (left running) to a tar file: CRIU images plus the
  container's config and root-filesystem changes. The snapshotter stores that file in its tiers.
- `restore_import` imports such a tar as a *new* container with its own name, network namespace
  (a fresh IP; the original one may still be in use) and published port, so any number of
  copies of one checkpoint serve side by side on different host ports. Podman unpacks the
  archive and creates the container on every call: ~0.3 s of a ~0.5 s restore here.
- `stage` does that import work ahead of time: it imports the tar keeping the checkpoint files
  in the new container, then kills it (a stopped container holding the checkpoint, no memory).
  `restore_staged` later renames it to its pod's name and restores it in place, skipping
  import, unpack and create. A staged container is used once.
Every call raises `PodmanCheckpointError` carrying podman's own message; on a restore error the
agent cold-starts the pod.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from thaw_core.podman.client import Podman
from thaw_core.podman.names import container_name

CHUNK = 1 << 20


@dataclass
class PodmanCheckpointError(Exception):
    what: str  # "checkpoint" | "restore" | "stage" | ...
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


@dataclass(frozen=True, slots=True)
class Restored:
    """A running restored container: its id and the host port it publishes on 127.0.0.1."""

    id: str
    name: str
    host_port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"


@dataclass(frozen=True, slots=True)
class Listed:
    id: str
    name: str
    running: bool
    host_port: int  # first published port, 0 when none


def _flag(b: bool) -> str:
    return "true" if b else "false"


class PodmanCheckpoints:
    def __init__(self, podman: Podman):
        self.podman = podman

    async def close(self) -> None:
        await self.podman.close()

    async def _post(self, what: str, container: str, path: str, params: dict[str, str], data: BinaryIO | None = None,
                    ok: tuple[int, ...] = (200, 204)) -> str:
        headers = {"Content-Type": "application/x-tar"} if data is not None else None
        async with await self.podman.libpod("POST", path, params=params, data=data, headers=headers) as r:
            text = await r.text()
            if r.status not in ok:
                raise PodmanCheckpointError(what, container, r.status, _message(text))
            return text

    async def checkpoint(self, container: str, dest: Path, *, leave_running: bool = True,
                         tcp_established: bool = True) -> CheckpointFile:
        """Export a checkpoint of `container` to `dest` (written to a temporary name, then
        renamed). `tcp_established` lets it succeed while a client holds a connection open."""
        params = {"export": "true", "leaveRunning": _flag(leave_running),
                  "tcpEstablished": _flag(tcp_established)}
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        t0 = time.monotonic()
        async with await self.podman.libpod("POST", f"/containers/{container}/checkpoint", params=params) as r:
            if r.status != 200:
                raise PodmanCheckpointError("checkpoint", container, r.status, _message(await r.text()))
            with open(tmp, "wb") as f:
                async for chunk in r.content.iter_chunked(CHUNK):
                    f.write(chunk)
        tmp.replace(dest)
        return CheckpointFile(path=dest, size_bytes=dest.stat().st_size,
                              duration_s=time.monotonic() - t0)

    async def restore_import(self, archive: Path, *, name: str, host_port: int, container_port: int,
                             keep: bool = False) -> Restored:
        """Import `archive` as a new running container `name` publishing 127.0.0.1:host_port ->
        container_port. It gets a new IP and MAC (the checkpoint's may still be in use), and
        connections open at checkpoint time are not restored. `keep` leaves the checkpoint
        files in the container (what `stage` needs)."""
        params = {"import": "true", "name": name, "keep": _flag(keep), "ignoreStaticIP": "true",
                  "ignoreStaticMAC": "true", "tcpEstablished": "false",
                  "publishPorts": f"127.0.0.1:{host_port}:{container_port}"}
        with open(archive, "rb") as body:
            text = await self._post("restore", name, f"/containers/{name}/restore", params, data=body)
        return Restored(id=json.loads(text)["Id"], name=name, host_port=host_port)

    async def restore(self, archive: Path, *, pod: str, host_port: int, container_port: int) -> Restored:
        """`restore_import` as the pod's own container ``thaw-<pod>``."""
        return await self.restore_import(archive, name=container_name(pod), host_port=host_port,
                                         container_port=container_port)

    async def stage(self, archive: Path, *, name: str, host_port: int, container_port: int) -> Listed:
        """Import `archive` as container `name` and stop it again, keeping the checkpoint in it:
        the slow part of a restore, done before anyone waits. Removes `name` if it fails."""
        try:
            restored = await self.restore_import(archive, name=name, host_port=host_port,
                                                 container_port=container_port, keep=True)
            await self.kill(name)
        except PodmanCheckpointError:
            await self.remove(name)
            raise
        return Listed(id=restored.id, name=name, running=False, host_port=host_port)

    async def restore_staged(self, staged: Listed, *, name: str) -> Restored:
        """Rename the staged container to `name` and restore it from the checkpoint it holds.
        On failure the container stays (stopped, under `name`) for the caller to remove."""
        await self._post("rename", staged.name, f"/containers/{staged.id}/rename", {"name": name})
        params = {"keep": "true", "ignoreStaticIP": "true", "ignoreStaticMAC": "true",
                  "tcpEstablished": "false"}
        text = await self._post("restore", name, f"/containers/{staged.id}/restore", params)
        return Restored(id=json.loads(text)["Id"], name=name, host_port=staged.host_port)

    async def kill(self, container: str) -> None:
        """SIGKILL `container` and wait until podman has it stopped."""
        await self._post("kill", container, f"/containers/{container}/kill", {"signal": "KILL"},
                         ok=(200, 204, 409))
        await self._post("wait", container, f"/containers/{container}/wait",
                         {"condition": "exited"}, ok=(200, 404))

    async def remove(self, container: str) -> None:
        """Force-remove `container`. Idempotent."""
        async with await self.podman.libpod("DELETE", f"/containers/{container}", params={"force": "true"}) as r:
            if r.status not in (200, 204, 404):
                raise PodmanCheckpointError("remove", container, r.status, _message(await r.text()))

    async def listed(self, name_prefix: str) -> list[Listed]:
        """Containers (running or not) whose name starts with `name_prefix`."""
        params = {"all": "true", "filters": json.dumps({"name": [name_prefix]})}
        async with await self.podman.libpod("GET", "/containers/json", params=params) as r:
            if r.status != 200:
                raise PodmanCheckpointError("list", name_prefix, r.status, _message(await r.text()))
            found = await r.json(content_type=None)
        out = []
        for c in found or []:
            name = next((n for n in c.get("Names") or [] if n.startswith(name_prefix)), None)
            if name is None:
                continue
            ports = [p.get("host_port") or p.get("hostPort") or 0 for p in c.get("Ports") or []]
            out.append(Listed(id=c["Id"], name=name, running=c.get("State") == "running",
                              host_port=next((p for p in ports if p), 0)))
        return out

    async def inspect(self, container: str) -> dict[str, Any]:
        """Podman's inspect document of `container`; PodmanCheckpointError (404) when gone."""
        async with await self.podman.libpod("GET", f"/containers/{container}/json") as r:
            if r.status != 200:
                raise PodmanCheckpointError("inspect", container, r.status, _message(await r.text()))
            doc: dict[str, Any] = await r.json(content_type=None)
            return doc


def container_port(inspected: dict[str, Any]) -> int:
    """The in-container TCP port a worker container publishes (its first port binding), 0 if none."""
    bindings = (inspected.get("HostConfig") or {}).get("PortBindings") or {}
    for key in bindings:
        port, _, proto = key.partition("/")
        if proto in ("tcp", "") and port.isdigit():
            return int(port)
    return 0


def _message(text: str) -> str:
    try:
        body = json.loads(text)
        return body.get("message") or body.get("cause") or text
    except (ValueError, AttributeError):
        return text[:500]
