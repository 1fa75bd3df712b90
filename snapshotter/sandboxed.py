"""CRIU for sandboxed process workers (thaw_core/sandbox): what a dump and a restore add.

- A dump takes the worker's veth out first and puts it back right after (CRIU cannot recreate
  a veth here), and declares the host mounts the worker sees (/dev, the binds of the Python
  install and the function's folder) external: they are the host's, not the image's. The
  manifest records them (`Manifest.mounts`, key -> host path).
- A restore maps each key to a private bind of the same host path on this node, made in a
  mount namespace of CRIU's own (a shared mount cannot be bound into the restored namespace),
  restores with the old mount engine
  over the host's root (`--root /`), lets the restored tree stay in the cgroup CRIU runs in
  (the new pod's, joined by the prelude), and gives the copy a veth and an address of its own.
  Nothing about the copy depends on its source still running: any number restore side by side.
"""

import hashlib
import os
import shlex
import time
from pathlib import Path

from thaw_core.sandbox import enter

# Mounts CRIU recreates itself (their content, for tmpfs, is in the image).
OWN_FILESYSTEMS = frozenset({"proc", "tmpfs", "devpts", "mqueue", "sysfs"})
RESTORE_OPTIONS = ("--root", "/", "--mntns-compat-mode", "--manage-cgroups=ignore")
STAGE_ROOT = Path("/run/thaw-sandbox")


def is_sandboxed(pid: int) -> bool:
    """A sandboxed worker lives in a user namespace of its own."""
    return enter.in_new_user_namespace(pid)


def external_mounts(pid: int) -> dict[str, str]:
    """key -> mount point of every host mount the worker's namespace shows, "/" aside."""
    mounts = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        point = before.split()[4].encode().decode("unicode_escape")
        fstype = after.split()[0] if after else ""
        if point != "/" and fstype not in OWN_FILESYSTEMS:
            mounts[_key(point)] = point
    return mounts


def _key(point: str) -> str:
    return "m" + hashlib.sha256(point.encode()).hexdigest()[:12]


def dump_options(mounts: dict[str, str]) -> tuple[str, ...]:
    return tuple(arg for key, point in sorted(mounts.items()) for arg in ("--external", f"mnt[{point}]:{key}"))


def restore_command(mounts: dict[str, str], cgroup_join: str, tag: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(wrapper, CRIU options) for restoring an image with these external mounts.

    CRIU runs in a mount namespace of its own, where each external mount is a private bind of
    the same host path on a scratch tmpfs: nothing is mounted on the host, so nothing is left
    to clean after a restore, whatever happens to it, and no restore sees another's binds. It
    joins the new pod's cgroup first, so the restored tree is born in it."""
    stage = STAGE_ROOT / tag
    lines = ["set -e", cgroup_join.rstrip("\n") or ":", "mount --make-rprivate /",
             f"mkdir -p {stage}", f"mount -t tmpfs -o mode=700,size=1m thaw-stage {stage}"]
    options: list[str] = list(RESTORE_OPTIONS)
    for key, point in sorted(mounts.items()):
        target = stage / key
        lines += [f"mkdir -p {target}", f"mount --bind {shlex.quote(point)} {target}", f"mount --make-private {target}"]
        options += ["--external", f"mnt[{key}]:{target}"]
    lines.append('exec "$@"')
    return ("unshare", "--mount", "sh", "-c", "\n".join(lines), "sh"), tuple(options)


def missing_mounts(mounts: dict[str, str]) -> list[str]:
    """Host paths the image needs that this node does not have."""
    return [point for point in sorted(mounts.values()) if not os.path.exists(point)]


def sweep_criu_scratch(older_than_s: float = 60.0, tmp: Path = Path("/tmp")) -> int:
    """Remove the empty /tmp/cr-tmpfs.* directories CRIU's mount engine leaves behind (it cannot
    remove them while the restored namespace holds them). Only ones older than any restore
    takes, and rmdir only: one still mounted somewhere stays. Returns how many went."""
    removed = 0
    cutoff = time.time() - older_than_s
    for entry in tmp.glob("cr-tmpfs.*"):
        try:
            if entry.stat().st_mtime < cutoff:
                entry.rmdir()
                removed += 1
        except OSError:
            continue
    return removed
