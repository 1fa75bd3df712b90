"""Container runtime: each worker is a container, driven through the Docker-compatible API
(aiodocker) of the node's podman socket, by the one podman client (thaw_core/podman/client.py)
the snapshotter's checkpoints use too. Podman with runc is what checkpoint/restore needs.

A container is named ``thaw-<pod>`` (thaw_core.podman.names), so `running` finds this node's
workers after an agent restart and a repeated `start` finds the one it already made (labels
record pod, fn and node for operators, but a restored copy inherits its source's labels, so
names are what we trust). Standby containers the snapshotter keeps are not workers.
Its port is published on 127.0.0.1:<launch.port> only. Host directories from the settings
(the node's model cache) are bind-mounted read-only at the same path: weights are mapped from
the host page cache, shared by every worker and absent from every checkpoint.
"""

from dataclasses import dataclass
from pathlib import Path

from thaw_core.podman.client import DockerError, Podman
from thaw_core.podman.names import POD_PREFIX, container_name, pod_of

from agents.runtime.base import WorkerHandle, WorkerLaunch

LABEL_POD, LABEL_FN, LABEL_NODE, LABEL_PORT = "thaw.pod", "thaw.fn", "thaw.node", "thaw.port"
DEFAULT_SOCKET = Path("/run/thaw/podman.sock")


@dataclass(frozen=True, slots=True)
class ContainerSettings:
    socket: Path = DEFAULT_SOCKET
    node: str = ""
    mounts: tuple[Path, ...] = ()  # host dirs bind-mounted read-only at the same path
    start_service: bool = True  # start `podman system service` on `socket` if none answers


def create_config(launch: WorkerLaunch, settings: ContainerSettings) -> dict:
    """The Docker-API create body for `launch`. Pure, so tests can read what we ask for."""
    if not launch.image:
        raise ValueError(f"pod {launch.pod}: the container runtime needs launch.image")
    cport = launch.container_port or launch.port
    return {
        "Image": launch.image,
        "Env": [f"{k}={v}" for k, v in {**launch.env, "PORT": str(cport)}.items()],
        "Labels": {LABEL_POD: launch.pod, LABEL_FN: launch.fn, LABEL_NODE: settings.node,
                   LABEL_PORT: str(launch.port)},
        "ExposedPorts": {f"{cport}/tcp": {}},
        "StopSignal": "SIGTERM",
        "HostConfig": {
            "PortBindings": {f"{cport}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(launch.port)}]},
            "Binds": [f"{m}:{m}:ro" for m in settings.mounts],
            **_limits(launch),
        },
    }


def _limits(launch: WorkerLaunch) -> dict[str, object]:
    """The function's memory, CPU and pids limits, the same as a process worker's cgroup, and
    no privileges to gain: the container's cgroup is podman's to make."""
    limits: dict[str, object] = {"SecurityOpt": ["no-new-privileges"], "CapDrop": ["ALL"]}
    if launch.limits is not None:
        limits.update({"Memory": launch.limits.memory_mib << 20, "MemorySwap": launch.limits.memory_mib << 20,
                       "NanoCpus": launch.limits.cpu_milli * 1_000_000, "PidsLimit": launch.limits.pids})
    return limits


def _host_ports(container) -> set[int]:
    bindings = (container["HostConfig"] or {}).get("PortBindings") or {}
    return {int(b["HostPort"]) for bs in bindings.values() for b in bs or [] if b.get("HostPort")}


def _handle(pod: str, container_id: str, port: str | int) -> WorkerHandle:
    return WorkerHandle(pod=pod, runtime="container", ref=container_id,
                        endpoint=f"http://127.0.0.1:{port}")


class ContainerRuntime:
    name = "container"

    def __init__(self, settings: ContainerSettings):
        self.settings = settings
        self.podman = Podman(settings.socket, start_service=settings.start_service)

    @classmethod
    def from_settings(cls, agent_settings) -> "ContainerRuntime":
        """Build from the agent's settings: `container_socket` and `container_mounts` when it has
        them, else the defaults (node name always)."""
        return cls(ContainerSettings(
            socket=Path(getattr(agent_settings, "container_socket", DEFAULT_SOCKET)),
            node=agent_settings.node,
            mounts=tuple(Path(m) for m in getattr(agent_settings, "container_mounts", ())),
        ))

    async def close(self) -> None:
        await self.podman.close()

    async def start(self, launch: WorkerLaunch) -> WorkerHandle:
        """Create and start ``thaw-<pod>``. Repeating it for a running pod returns that container;
        a stopped leftover of the same name, or a running one published on another port (a
        restore the agent gave up on, finishing late), is replaced."""
        docker = await self.podman.docker()
        name = container_name(launch.pod)
        try:
            existing = await docker.containers.get(name)
            if existing["State"]["Running"] and _host_ports(existing) == {launch.port}:
                return _handle(launch.pod, existing.id, launch.port)
            await existing.delete(force=True)
        except DockerError as e:
            if e.status != 404:
                raise
        container = await docker.containers.create(create_config(launch, self.settings), name=name)
        await container.start()
        return _handle(launch.pod, container.id, launch.port)

    async def is_alive(self, handle: WorkerHandle) -> bool:
        docker = await self.podman.docker()
        try:
            info = await (await docker.containers.get(handle.ref)).show()
        except DockerError as e:
            # podman answers 500 "no such container" when it is removed between the two calls
            if e.status == 404 or "no such container" in str(e.message):
                return False
            raise
        return bool(info["State"]["Running"])

    async def stop(self, handle: WorkerHandle, grace_s: float = 10.0) -> None:
        """SIGTERM, up to grace_s, SIGKILL (the engine does this), then remove. Idempotent."""
        docker = await self.podman.docker()
        try:
            container = await docker.containers.get(handle.ref)
            await container.stop(t=max(0, int(grace_s)))
            await container.delete(force=True)
        except DockerError as e:
            if e.status != 404:
                raise

    def prepare(self, pod: str, limits) -> None:
        """Podman makes a restored container's cgroup itself."""

    def main_pid(self, handle: WorkerHandle) -> int | None:
        return None

    def pids(self, handle: WorkerHandle) -> frozenset[int]:
        """Not known here (podman's cgroup): a container's GPU memory is not watched yet."""
        return frozenset()

    async def forget(self, pod: str) -> None:
        """Nothing of a container's outlives it."""

    def exit_reason(self, handle: WorkerHandle) -> str:
        return ""

    async def running(self) -> list[WorkerHandle]:
        """Running ``thaw-*`` containers of this engine (one engine per node). The pod comes
        from the name and the port from the published binding, not from labels: a container
        restored from another pod's checkpoint keeps that pod's labels."""
        docker = await self.podman.docker()
        found = await docker.containers.list(filters={"name": [POD_PREFIX]})
        out = []
        for c in found:
            pod = next((p for n in c._container.get("Names") or [] if (p := pod_of(n))), None)
            ports = [p.get("PublicPort") or p.get("host_port") for p in c._container.get("Ports") or []]
            port = next((p for p in ports if p), 0)
            if pod:
                out.append(_handle(pod, c.id, port))
        return out
