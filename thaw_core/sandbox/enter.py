"""How a sandboxed worker is started: the argv, and the uid/gid maps written from outside.

    unshare --mount sh -c OUTER            # as root, in a private copy of the host's mounts
      join the pod's cgroup; hide closed dirs (root's home) behind a tmpfs, and give the worker
      a private /tmp, showing only the paths the worker needs there (e.g. the Python install a
      venv points into); unmount everything else the worker does not need (CRIU can only
      checkpoint mounts it can recreate)
      exec unshare --user --keep-caps --mount --pid --net --fork setsid sh -c INNER
        wait for the uid/gid maps (`write_id_maps`, from the agent, root of the parent namespace)
        and for the pod's network (`network.attach`, from the agent: eth0 routed)
        own /proc and /dev/shm; stdio opened here (CRIU resolves an fd through its mount)
        exec setpriv --reuid 1000 ... --no-new-privs WORKER   # host uid: the function's own

Shell and small tools only between fork and exec (see thaw_core/spawn.py). uid 1000 inside is
the function's uid outside; uid 0 inside is root outside only for the launcher, which drops
every capability before the worker runs.
"""

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from thaw_core.sandbox.network import INSIDE as POD_LINK

INSIDE_UID = 1000
TMP_SIZE = "256m"


@dataclass(frozen=True, slots=True)
class Exposure:
    """`hidden` is covered with an empty tmpfs; `shown` (under it) is bound back in place."""

    hidden: str
    shown: tuple[str, ...]


def closed_ancestor(path: str) -> str:
    """The first directory on the way to `path` that a stranger may not enter, "" if none."""
    current = Path("/")
    for part in Path(path).parts[1:]:
        current = current / part
        try:
            mode = current.stat().st_mode
        except OSError:
            return ""
        if current.is_dir() and not mode & 0o001:
            return str(current) if current != Path(path) else ""
    return ""


def cover_of(path: str) -> str:
    """What hides `path` from the worker: its private /tmp, or a closed directory ("" if none)."""
    return "/tmp" if path == "/tmp" or path.startswith("/tmp/") else closed_ancestor(path)


def exposures(needed: list[str]) -> tuple[Exposure, ...]:
    """Group the needed paths under what would hide them; the private /tmp is always there."""
    by_hidden: dict[str, list[str]] = {"/tmp": []}
    for path in needed:
        hidden = cover_of(path)
        if hidden and path != hidden:
            by_hidden.setdefault(hidden, []).append(path)
    return tuple(Exposure(h, _outermost(p)) for h, p in sorted(by_hidden.items()))


def _outermost(paths: list[str]) -> tuple[str, ...]:
    """The paths not inside another of them: showing a folder shows what is in it."""
    unique = sorted(set(paths))
    return tuple(p for p in unique if not any(p.startswith(q.rstrip("/") + "/") for q in unique if q != p))


def mount_points(mountinfo: str) -> list[str]:
    """Mount points of a /proc/<pid>/mountinfo text, octal escapes decoded."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(fields[4].encode().decode("unicode_escape"))
    return points


def to_strip(points: list[str], needed: list[str]) -> list[str]:
    """Every mount but /, /dev, /proc and those holding a needed path, deepest first."""
    keep = {"/", "/dev", "/proc"}
    for path in needed:
        holders = [m for m in points if path == m or path.startswith(m.rstrip("/") + "/")]
        keep.update(holders)
    return sorted({m for m in points if m not in keep}, key=lambda m: (-m.count("/"), m))


def outer_script(cgroup_join: str, exposed: tuple[Exposure, ...], strip: list[str], stage: str) -> str:
    # 066: the directories made to hold what is shown can be passed through, never listed.
    lines = ["set -e", "umask 066", cgroup_join.rstrip("\n") or ":", "mount --make-rprivate /",
             f"mkdir -p {shlex.quote(stage)}", f"mount -t tmpfs -o mode=700,size=1m thaw-stage {shlex.quote(stage)}"]
    for i, e in enumerate(exposed):
        for j, shown in enumerate(e.shown):
            lines.append(f"mkdir -p {shlex.quote(f'{stage}/e{i}-{j}')}")
            lines.append(f"mount --bind {shlex.quote(shown)} {shlex.quote(f'{stage}/e{i}-{j}')}")
        options = f"mode=1777,size={TMP_SIZE},nosuid,nodev" if e.hidden == "/tmp" else "mode=711,size=1m"
        lines.append(f"mount -t tmpfs -o {options} thaw-hidden {shlex.quote(e.hidden)}")
        for j, shown in enumerate(e.shown):
            lines.append(f"mkdir -p {shlex.quote(shown)}")
            lines.append(f"mount --bind {shlex.quote(f'{stage}/e{i}-{j}')} {shlex.quote(shown)}")
            lines.append(f"umount {shlex.quote(f'{stage}/e{i}-{j}')}")
    lines.append(f"umount {shlex.quote(stage)}")  # the staging tmpfs: nothing of it is left on the host
    lines.append("set +e")
    lines += [f"umount -l {shlex.quote(m)} 2>/dev/null" for m in strip]
    lines.append('exec unshare --user --keep-caps --mount --pid --net --fork setsid sh -c "$1" sh "$@"')
    return "\n".join(lines) + "\n"


NETWORK_WAIT_TRIES = 4000  # of 5 ms and a fork each: about half a minute

# The worker runs only once its network is up: one that connects somewhere as it starts must
# find its address there, and one that exits at once must fail for its own reason, not the
# agent's (it cannot attach a network to a namespace that is gone).
INNER = f"""set -e
while [ -z "$(cat /proc/self/uid_map)" ]; do sleep 0.005; done
n=0
until grep -q '^{POD_LINK}' /proc/net/route; do
  n=$((n+1)); [ $n -lt {NETWORK_WAIT_TRIES} ] || {{ echo "thaw: the pod's network never came up" >&2; exit 1; }}
  sleep 0.005
done
mount -t proc -o nosuid,nodev,noexec proc /proc
if [ -d /dev/shm ]; then mount -t tmpfs -o mode=1777,size={TMP_SIZE},nosuid,nodev thaw-shm /dev/shm; fi
log=$2; shift 2
exec </dev/null >>"$log" 2>&1
cd /tmp
exec setpriv --reuid {INSIDE_UID} --regid {INSIDE_UID} --clear-groups --inh-caps=-all --ambient-caps=-all \\
  --bounding-set=-all --no-new-privs -- "$@"
"""


def argv(command: list[str], log_path: Path, cgroup_join: str, needed: list[str], stage: str) -> list[str]:
    """The full argv that starts `command` sandboxed, its output appended to `log_path`."""
    exposed = exposures(needed)
    kept = needed + [p for e in exposed for p in (e.hidden, *e.shown)]
    strip = to_strip(mount_points(Path("/proc/self/mountinfo").read_text()), kept)
    outer = outer_script(cgroup_join, exposed, strip, stage)
    return ["unshare", "--mount", "sh", "-c", outer, "sh", INNER, str(log_path), *command]


def write_id_maps(pid: int, host_uid: int) -> None:
    """Map inside uid/gid 1000 to the function's host uid, and 0 to root for the launcher.
    Only a process of the parent namespace with CAP_SETUID (the agent, as root) may do this."""
    mapping = f"0 0 1\n{INSIDE_UID} {host_uid} 1\n"
    Path(f"/proc/{pid}/uid_map").write_text(mapping)
    Path(f"/proc/{pid}/gid_map").write_text(mapping)


def in_new_user_namespace(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
    except OSError:
        return False
