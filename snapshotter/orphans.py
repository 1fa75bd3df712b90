"""Stop restored workers that nobody owns, left by a snapshotter that died mid-restore.

If this process is killed while CRIU restores, CRIU may still finish: a worker then runs that
the agent never heard of (it timed out and cold-started the pod instead). Such a worker would
hold memory and, worse, the snapshot's port, so every later restore here would fail "port busy".
At start-up, before serving restores, the snapshotter kills every process that is

- the init of its own PID namespace carrying this node's THAW_NODE (a worker),
- not a child of `unshare` (so not a cold start: those keep their unshare parent), and
- not the runtime_ref of any live pod on this node in Redis.

Running only at start-up matters: a restore this process answered is recorded by the agent
within milliseconds, but not atomically with the answer.
"""

import logging
from pathlib import Path

from thaw_core import process_refs
from thaw_core.store.pods import Pods

from snapshotter import procs

log = logging.getLogger(__name__)


def _worker_facts(proc: Path) -> tuple[str, int] | None:
    """(THAW_NODE, parent pid) of a namespace-init process, else None."""
    try:
        status = (proc / "status").read_text()
        env = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    fields = dict(ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
    nspid = fields.get("NSpid", "").split()
    if len(nspid) < 2 or nspid[-1] != "1":
        return None
    node = next((e[len(b"THAW_NODE="):].decode(errors="replace") for e in env if e.startswith(b"THAW_NODE=")), "")
    return node, int(fields.get("PPid", "0").strip() or 0)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


async def stop_orphans(node: str, pods: Pods) -> int:
    """Kill unowned restored workers of `node` (see module doc); returns how many."""
    owned = {p.runtime_ref for p in await pods.live() if p.node == node}
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        facts = _worker_facts(proc)
        if facts is None or facts[0] != node or _comm(facts[1]) == "unshare":
            continue
        ref = process_refs.ref_of(int(proc.name))
        if ref is not None and ref not in owned:
            log.warning("stopping restored worker %s: no live pod on %s owns it", ref, node)
            procs.kill(int(proc.name))
            killed += 1
    return killed
