"""Placement worker settings, parsed once at start-up."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PlacementSettings:
    nats_url: str
    redis_url: str
    nats_creds: Path | None = None  # this service's bus credentials (JSON, 0600); None: an open bus
    redis_creds: Path | None = None  # this service's store credentials (JSON, 0600); None: none needed
    name: str = "placement"
    housekeeping_every_s: float = 0.5
    backlog_every_s: float = 1.0  # how often queued async calls are counted for scale-up (placement/backlog.py)
    node_timeout_s: float = 10.0  # a node silent this long is lost; its pods are reclaimed
    # A node's heartbeat is written to the store at most this often by each worker (its liveness
    # is judged against node_timeout_s, and each worker's reclaims against what it hears itself).
    heartbeat_store_every_s: float = 2.0
    unreported_grace_s: float = 5.0  # a live node that stops listing a pod loses it after this
    pending_timeout_s: float = 30.0  # a pod no agent picked up is reclaimed after this
    commit_attempts: int = 5
    # The learned workload (placement/learned_workload.py): a request this old weighs half, and
    # each worker syncs its counts with the store at most this often (not per decision).
    workload_half_life_s: float = 3600.0
    workload_sync_every_s: float = 5.0
