"""A host process named so that a reused pid is never mistaken for it: "pid:starttime", the
start time being field 22 of /proc/<pid>/stat. The agent records its workers' refs, the
snapshotter its restored ones'; both read them back here. Linux /proc only."""

from pathlib import Path


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def parse_ref(ref: str) -> tuple[int, str]:
    """"pid:starttime" -> (pid, starttime). Raises ValueError on anything else."""
    pid, sep, start = ref.partition(":")
    if not sep or not pid.isdigit() or not start:
        raise ValueError(f"not a process ref (pid:starttime): {ref!r}")
    return int(pid), start


def ref_of(pid: int) -> str | None:
    """The ref of `pid` while it lives, None once it is gone."""
    start = start_time(pid)
    return f"{pid}:{start}" if start is not None else None

