"""Container names: the one contract between the agent's container runtime and the snapshotter.

A pod's worker is the container ``thaw-<pod>``: the agent finds its workers by name after a
restart (a container restored from another pod's checkpoint keeps that pod's labels, so names,
not labels, are what we trust). A standby the snapshotter keeps for a snapshot is
``thaw-standby-<snapshot>-<n>``; taking one renames it to its pod's name.
"""

POD_PREFIX = "thaw-"
STANDBY_PREFIX = "thaw-standby-"


def container_name(pod: str) -> str:
    return f"{POD_PREFIX}{pod}"


def standby_name(snapshot_id: str, slot: int) -> str:
    return f"{STANDBY_PREFIX}{snapshot_id}-{slot}"


def pod_of(name: str) -> str | None:
    """The pod a container name belongs to; None for standbys and foreign containers."""
    name = name.lstrip("/")
    if not name.startswith(POD_PREFIX) or name.startswith(STANDBY_PREFIX):
        return None
    return name[len(POD_PREFIX):]
