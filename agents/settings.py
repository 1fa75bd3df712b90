"""The agent's settings, parsed once at start-up and passed down (no env reads at import)."""

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class MockGpu:
    model: str = "Mock-24G"
    vram_mib: int = 24576


@dataclass(frozen=True, slots=True)
class AgentSettings:
    node: str
    nats_url: str
    redis_url: str
    state_dir: Path
    nats_creds: Path | None = None  # this service's bus credentials (JSON, 0600); None: an open bus
    redis_creds: Path | None = None  # this service's store credentials (JSON, 0600); None: none needed
    runtime: str = "process"
    mock_gpus: tuple[MockGpu, ...] = (MockGpu(), MockGpu())
    force_mock_gpus: bool = False  # use the declared inventory even when NVML finds GPUs
    cpu_milli: int = field(default_factory=lambda: (os.cpu_count() or 1) * 1000)
    memory_mib: int = field(default_factory=lambda: _memory_mib())
    heartbeat_s: float = 1.0
    capacity_every_s: float = 30.0
    health_every_s: float = 1.0
    stop_grace_s: float = 10.0
    # Ask this node's snapshotter to checkpoint a function's first warm worker (either runtime;
    # function spec `snapshot = true`), so later pods restore instead of cold-starting.
    request_snapshots: bool = True
    restore_timeout_s: float = 30.0  # wait this long for the snapshotter's restore, then cold-start
    # A snapshotter runs beside this agent (`thaw up` passes --expect-snapshotter when it starts
    # one): while it does not answer its pings, the node reports itself degraded.
    expect_snapshotter: bool = False
    snapshotter_ping_timeout_s: float = 2.0  # a ping unanswered this long is a miss
    snapshotter_down_after: int = 3  # consecutive misses: the snapshotter is down, the node offers no snapshots
    container_socket: Path = Path("/run/thaw/podman.sock")  # podman API (container runtime)
    container_mounts: tuple[Path, ...] = ()  # host dirs bind-mounted read-only into containers
    # A graceful stop (SIGTERM/Ctrl-C) stops this node's workers; a crash leaves them to adopt.
    stop_workers_on_exit: bool = True
    # Process workers run sandboxed (thaw_core/sandbox) wherever the node can: None. False runs
    # them as the agent's user, in the node's network namespace (and one restored copy at a time).
    sandbox: bool | None = None
    pod_cidr: str = ""  # the node's pod subnet; "" derives one from the node id (the snapshotter's too)


def _memory_mib() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError):
        return 4096
