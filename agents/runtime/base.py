"""The interface every worker runtime (local process, container) offers the agent.

A runtime only starts, inspects and stops workers; the agent owns pod state, health probes and
the ledger. Every method is safe to repeat: stopping a stopped worker is not an error.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from thaw_core.sandbox.cgroups import Limits


@dataclass(frozen=True, slots=True)
class WorkerLaunch:
    """Everything a runtime needs to start one worker."""

    pod: str
    fn: str
    port: int  # host port the worker must answer on (127.0.0.1)
    command: tuple[str, ...] = ()  # local-process runtime
    image: str = ""  # container runtime
    container_port: int = 0  # port inside the container; 0 means same as `port`
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    uid: int = 0  # the function's host uid (sandboxed process workers run as it)
    limits: Limits | None = None  # memory / CPU / pids of the worker's cgroup


@dataclass(frozen=True, slots=True)
class WorkerHandle:
    """A started worker, enough to find it again after an agent restart."""

    pod: str
    runtime: str  # "process" | "container"
    ref: str  # pid (with start time) or container id
    endpoint: str  # http://ADDRESS:PORT (the pod's own address when sandboxed)


class WorkerRuntime(Protocol):
    name: str

    async def start(self, launch: WorkerLaunch) -> WorkerHandle:
        """Start the worker and return at once; the agent probes health itself."""

    async def is_alive(self, handle: WorkerHandle) -> bool:
        """True while the worker process/container runs."""

    async def stop(self, handle: WorkerHandle, grace_s: float = 10.0) -> None:
        """SIGTERM, wait up to grace_s, then SIGKILL. Idempotent."""

    async def running(self) -> list[WorkerHandle]:
        """Workers of this node that the runtime can see, for reconciliation after a restart."""

    def prepare(self, pod: str, limits: Limits) -> None:
        """Make what a worker restored for `pod` must join (its cgroup); idempotent."""

    async def close(self) -> None:
        """The agent is going: release the runtime's own resources (not the workers')."""

    def pids(self, handle: WorkerHandle) -> frozenset[int]:
        """Host pids of the worker and everything it started (for its GPU memory); may be empty."""

    def main_pid(self, handle: WorkerHandle) -> int | None:
        """The host pid of the worker's own process, whose stdout is its log; None when the
        runtime has no such process here (a container's is podman's)."""

    async def forget(self, pod: str) -> None:
        """Drop what `prepare` made for a pod that got no worker after all; idempotent."""

    def exit_reason(self, handle: WorkerHandle) -> str:
        """How a worker that is gone went, when the runtime knows (an OOM kill, its exit code or
        signal), else ""."""
