"""What a snapshot is, written next to its archive in every tier, and whether this node can use it.

The manifest travels with the archive so a tier is self-describing (an operator, or an agent
whose Redis index was lost, can still tell what a file is). Redis holds the same fields for
fast listing (thaw_core/store/snapshots.py).
"""

import platform
from dataclasses import dataclass

import msgspec

from bus_schemas.snapshots import MANIFEST_VERSION, Manifest


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
