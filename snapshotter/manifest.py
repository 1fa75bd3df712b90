"""What a snapshot is, written next to its archive in every tier, and whether this node can use it.

The manifest travels with the archive so a tier is self-describing (an operator, or an agent
whose Redis index was lost, can still tell what a file is). Redis holds the same fields for
fast listing (see index.py).
"""

import platform
from dataclasses import dataclass

import msgspec

MANIFEST_VERSION = 1


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    fn: str
    node: str  # where it was taken
    runtime: str  # "process" (raw CRIU image dir) or "container" (podman checkpoint export)
    created_ms: int
    sha256: str  # of the compressed archive
    size_bytes: int  # compressed
    raw_bytes: int  # uncompressed image
    arch: str
    kernel: str
    criu_version: str
    port: int = 0  # the port the worker listens on inside the image
    gpu: bool = False  # device memory included (cuda-checkpoint)
    gpu_indices: str = ""  # with gpu: the node's GPU indices the worker held ("0,1"); a restore needs the same
    spec_digest: str = ""  # bus_schemas.functions.spec_digest of the spec the worker ran
    sandboxed: bool = False  # taken of a sandboxed worker (thaw_core/sandbox): restored into a new sandbox
    mounts: dict[str, str] = {}  # sandboxed: host mounts the image refers to, key -> host path
    v: int = MANIFEST_VERSION


def encode(m: Manifest) -> bytes:
    return msgspec.json.encode(m)


def decode(raw: bytes) -> Manifest:
    """Raises msgspec.ValidationError / DecodeError on a malformed manifest."""
    return msgspec.json.decode(raw, type=Manifest)


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What a restoring node offers, compared against a manifest."""

    arch: str
    criu_version: str
    gpu_checkpoint: bool = False

    @staticmethod
    def local(criu_version: str, gpu_checkpoint: bool = False) -> "HostFacts":
        return HostFacts(arch=platform.machine(), criu_version=criu_version,
                         gpu_checkpoint=gpu_checkpoint)


def incompatibility(m: Manifest, host: HostFacts, runtime: str) -> str | None:
    """None when `host` can restore `m` with `runtime`, else the reason, for the pod's events.

    Kernel versions may differ (CRIU images are kernel-portable within reason); the CPU
    architecture, the CRIU major version and the runtime kind may not.
    """
    if m.v > MANIFEST_VERSION:
        return f"manifest version {m.v} is newer than this snapshotter's {MANIFEST_VERSION}"
    if m.arch != host.arch:
        return f"image is {m.arch}, node is {host.arch}"
    if m.runtime != runtime:
        return f"image is for the {m.runtime} runtime, pod uses {runtime}"
    if m.criu_version.split(".")[0] != host.criu_version.split(".")[0]:
        return f"image taken with CRIU {m.criu_version}, node has {host.criu_version}"
    if m.gpu and not host.gpu_checkpoint:
        return "image holds GPU memory and this node cannot restore it (no cuda-checkpoint)"
    return None
