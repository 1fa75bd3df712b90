"""Errors of the snapshotter, with the fields a caller needs to act (fall back, retry, install).

Every restore-side error is a `SnapshotUnusable`: the caller's one rule is "on SnapshotUnusable,
cold-start the pod and record `reason` in its events", never "run a half-restored worker".
"""

from dataclasses import dataclass

INSTALL_CRIU_HINT = "run `sudo infra/install-criu.sh` (builds CRIU 4.x into /usr/local/sbin)"


@dataclass
class SnapshotError(Exception):
    """Base class. `what` names the operation, `why` says what went wrong."""

    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.what}: {self.why}"


@dataclass
class CriuMissing(SnapshotError):
    """No usable CRIU binary on this node. `hint` says how to install one."""

    hint: str = INSTALL_CRIU_HINT

    def __str__(self) -> str:
        return f"{self.what}: {self.why}; {self.hint}"


@dataclass
class _ToolLog:
    """What a failed CRIU or podman run left behind: its exit code, log file and last errors."""

    exit_code: int = 0
    log_path: str = ""
    log_tail: str = ""

    def __str__(self) -> str:
        # A mixin: its subclasses also derive from SnapshotError, which has `what` and `why`.
        return f"{self.what}: {self.why} (exit {self.exit_code}, log {self.log_path})\n{self.log_tail}"  # type: ignore[attr-defined]


@dataclass
class CriuFailed(_ToolLog, SnapshotError):
    """`criu dump` or `criu restore` exited non-zero. `log_tail` holds its last error lines."""


@dataclass
class SnapshotUnusable(SnapshotError):
    """A snapshot cannot be restored here; the pod must cold-start. `snapshot` is its id."""

    snapshot: str = ""


@dataclass
class SnapshotMissing(SnapshotUnusable):
    """No tier holds the snapshot (deleted by retention, or never copied to a reachable tier)."""


@dataclass
class SnapshotCorrupt(SnapshotUnusable):
    """Every tier's copy failed its checksum or could not be unpacked. `tiers` lists the tried."""

    tiers: tuple[str, ...] = ()


@dataclass
class SnapshotIncompatible(SnapshotUnusable):
    """The image was taken on a node this one cannot restore (arch, CRIU major, runtime)."""


@dataclass
class RestoreFailed(_ToolLog, SnapshotUnusable):
    """`criu restore` (or podman's restore) exited non-zero; `log_tail` holds its error lines."""


@dataclass
class CudaCheckpointFailed(SnapshotError):
    """`cuda-checkpoint` failed or left a worker's CUDA state other than expected (cuda_state.py).
    On a dump the snapshot fails; on a restore it is answered as a SnapshotUnusable (cold start)."""

    exit_code: int = 0
    log_tail: str = ""

    def __str__(self) -> str:
        head = f"{self.what}: {self.why}" + (f" (exit {self.exit_code})" if self.exit_code else "")
        return f"{head}\n{self.log_tail}" if self.log_tail else head
