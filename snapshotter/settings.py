"""The snapshotter service's settings, parsed once at start-up and passed down."""

from dataclasses import dataclass
from pathlib import Path

from thaw_core.sandbox.network import PodNetwork, current as current_network

from snapshotter.retention import RetentionPolicy
from snapshotter.store import Tier, TieredStore


@dataclass(frozen=True, slots=True)
class SnapshotterSettings:
    node: str
    nats_url: str
    redis_url: str
    state_dir: Path  # local tier, unpacked-image cache, dump scratch space
    nats_creds: Path | None = None  # this service's bus credentials (JSON, 0600); None: an open bus
    redis_creds: Path | None = None  # this service's store credentials (JSON, 0600); None: none needed
    shared_dir: Path | None = None  # a directory every node mounts: the shared tier
    criu_path: str | None = None  # default: /usr/local/sbin/criu, then PATH
    presence_ttl_s: float = 5.0  # placement stops choosing this node's snapshots this long after a crash
    retention: RetentionPolicy = RetentionPolicy()
    # "process": CRIU on local-process workers; "container": podman checkpoints of the agent's
    # container workers, through the podman API on `podman_socket` (the agent's runtime decides).
    runtime: str = "process"
    podman_socket: Path = Path("/run/thaw/podman.sock")
    standby_per_snapshot: int = 1  # staged containers kept per container snapshot (0: always import)
    cuda_checkpoint_path: str | None = None  # NVIDIA's cuda-checkpoint (default: PATH); see gpu_support.py
    pod_cidr: str = ""  # the node's pod subnet (thaw_core/sandbox/network.py); "" derives it from the node id
    max_restores: int = 0  # CRIU restores at once on this node; 0: one per core

    def capabilities(self, gpu: tuple[str, ...] = ()) -> tuple[str, ...]:
        """What this snapshotter announces: ("criu",) or ("criu", "container"), then `gpu`
        (GpuCheckpointSupport.capability(): ("cuda-checkpoint",) where detected)."""
        return (("criu", "container") if self.runtime == "container" else ("criu",)) + gpu

    def network(self) -> PodNetwork:
        """The node's pod network as the agent made it (the subnet its bridge has)."""
        return current_network(self.node, self.pod_cidr)

    def store(self) -> TieredStore:
        tiers = [Tier("local", self.state_dir / "local")]
        if self.shared_dir is not None:
            tiers.append(Tier("shared", self.shared_dir))
        return TieredStore(tiers)

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"
