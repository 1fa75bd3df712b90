"""Event-loop watchdog: a service whose loop stops turning dies loudly, so its supervisor
restarts it, instead of living on deaf (issue 17: a snapshotter stuck in a fork answered
nothing, for good, and nobody noticed).

The loop re-arms `faulthandler.dump_traceback_later` every quarter of `stuck_s`. If it fails to
for `stuck_s`, faulthandler's own C thread (it needs neither the loop nor the GIL) writes every
thread's stack to stderr, under a line `Timeout (0:00:30)!`, and exits the process with status
1. `thaw up` restarts a component that exits; on Kubernetes, the container's restart policy.

With `THAW_LIVENESS_FILE` set, each turn also touches that file, so an exec liveness probe
(`python -m thaw_core.liveness FILE MAX_AGE_S`) sees the loop turning from outside the
process: infra/k8s's probes use it for the services that serve no HTTP.
"""

import asyncio
import faulthandler
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_STUCK_S = 30.0  # far above any step a service takes on its loop; CRIU and I/O run elsewhere
ENV_STUCK_S = "THAW_LOOP_STUCK_S"  # 0 turns the watchdog off (e.g. under a debugger)
ENV_LIVENESS_FILE = "THAW_LIVENESS_FILE"


def stuck_after_s(environ: Mapping[str, str] = os.environ) -> float:
    """The threshold this process runs with, read once at start-up."""
    raw = environ.get(ENV_STUCK_S, "")
    try:
        value = float(raw) if raw else DEFAULT_STUCK_S
    except ValueError:
        raise SystemExit(f"{ENV_STUCK_S}={raw!r} is not a number of seconds (0 turns the watchdog off)") from None
    if value < 0:
        raise SystemExit(f"{ENV_STUCK_S}={raw!r} must be >= 0 (0 turns the watchdog off)")
    return value


def liveness_file(environ: Mapping[str, str] = os.environ) -> Path | None:
    raw = environ.get(ENV_LIVENESS_FILE, "")
    return Path(raw) if raw else None


async def watch_loop(stuck_s: float, alive_file: Path | None = None) -> None:
    """Run for the life of the loop (cancel it to stop watching). Touches `alive_file` (if
    given) every turn, every 5 s at least."""
    if stuck_s <= 0 and alive_file is None:
        return
    if stuck_s > 0:
        log.info("loop watchdog: if this loop stalls for %.0fs, every thread's stack goes to this log "
                 "(after a line 'Timeout') and the process exits 1", stuck_s)
    every_s = min(stuck_s / 4, 5.0) if stuck_s > 0 else 5.0
    try:
        while True:
            if stuck_s > 0:
                faulthandler.dump_traceback_later(stuck_s, exit=True, file=sys.stderr)
            if alive_file is not None:
                _touch(alive_file)
            await asyncio.sleep(every_s)
    finally:
        faulthandler.cancel_dump_traceback_later()


def _touch(path: Path) -> None:
    try:
        path.touch()
    except OSError:
        log.warning("cannot touch the liveness file %s; its probe will restart this service", path)
