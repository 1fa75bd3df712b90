"""Small facts about host processes the snapshotter needs: is a pid the one we think, stop it,
and is a loopback port free. Linux /proc only."""

import os
import signal
import socket
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
    start = start_time(pid)
    return f"{pid}:{start}" if start is not None else None


def kill(pid: int) -> None:
    """SIGKILL `pid` (a restored worker is its namespace's init, so this ends all of it)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port. SO_REUSEADDR, so a connection lingering in
    TIME_WAIT does not count: CRIU restores the listener with the flags it had."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def page_faults(pid: int) -> int | None:
    """Minor plus major page faults of `pid` so far (fields 10 and 12 of /proc/<pid>/stat), None
    if gone. A lazily restored worker faults once per page it touches before the daemon has
    copied it in (restore_modes.py learns from that)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    return int(fields[7]) + int(fields[9])
