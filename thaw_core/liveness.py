"""`python -m thaw_core.liveness FILE MAX_AGE_S`: exit 0 while FILE was touched within MAX_AGE_S
(a service's loop is turning, see thaw_core.watchdog), else 1 with the reason. An exec liveness
probe for the services that serve no HTTP."""

import sys
import time
from pathlib import Path


def verdict(path: Path, max_age_s: float, now_s: float) -> str:
    """"" when fresh, else why not."""
    try:
        age_s = now_s - path.stat().st_mtime
    except OSError as exc:
        return f"{path}: {exc.strerror}: the service has not started its loop, or cannot write there"
    if age_s > max_age_s:
        return f"{path} last touched {age_s:.0f}s ago (limit {max_age_s:g}s): the service's loop is not turning"
    return ""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m thaw_core.liveness FILE MAX_AGE_S", file=sys.stderr)
        return 2
    try:
        max_age_s = float(argv[1])
    except ValueError:
        print(f"MAX_AGE_S={argv[1]!r} is not a number of seconds", file=sys.stderr)
        return 2
    why = verdict(Path(argv[0]), max_age_s, time.time())
    if why:
        print(why, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
