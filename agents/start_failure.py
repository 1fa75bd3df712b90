"""Why a pod did not start, in words a function's author can act on.

The reason a failed start is recorded with (the pod's `reason`, the caller's 503, `thaw ls`)
says how the worker ended, what it last printed, and what the last health probe got, so the
author need not find the agent's log directory to learn that their worker crashed.
"""

from pathlib import Path

TAIL_LINES = 10
TAIL_BYTES = 2048


def log_tail(path: Path | None, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """The last `lines` lines of the worker's log, at most `max_bytes` of it, decoded leniently
    (a worker may print anything); "" when there is no log or it is empty."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            raw = f.read(max_bytes)
    except OSError:
        return ""
    text = raw.decode("utf-8", errors="replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]  # the first line is cut: drop it rather than show half
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join(kept)


def describe(how: str, last_probe: str = "", tail: str = "", log_path: Path | None = None) -> str:
    """One reason from its parts: how the start ended, then the last probe result and the log's
    last lines where there are any, then where the whole log is."""
    parts = [how]
    if last_probe:
        parts.append(f"last health probe: {last_probe}")
    if tail:
        parts.append(f"last lines of its log:\n{tail}")
    if log_path is not None:
        parts.append(f"whole log: {log_path}")
    return "; ".join(parts)
