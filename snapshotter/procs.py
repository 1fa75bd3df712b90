"""Small facts about host processes the snapshotter needs: is a pid the one we think, stop it,
and is a loopback port free. Linux /proc only."""

import os
import signal
import socket
from pathlib import Path


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
