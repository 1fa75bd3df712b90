"""Event-loop watchdog: a service whose loop stops turning dies loudly, so its supervisor
restarts it, instead of living on deaf (issue 17: a snapshotter stuck in a fork answered
nothing, for good, and nobody noticed).

The loop re-arms `faulthandler.dump_traceback_later` every quarter of `stuck_s`. If it fails to
for `stuck_s`, faulthandler's own C thread (it needs neither the loop nor the GIL) writes every
thread's stack to stderr, under a line `Timeout (0:00:30)!`, and exits the process with status
1. `thaw up` restarts a component that exits; on Kubernetes, the container's restart policy.
"""

import asyncio
import faulthandler
import logging
import os
import sys

log = logging.getLogger(__name__)
DEFAULT_STUCK_S = 30.0  # far above any step a service takes on its loop; CRIU and I/O run elsewhere
ENV_STUCK_S = "THAW_LOOP_STUCK_S"  # 0 turns the watchdog off (e.g. under a debugger)


def stuck_after_s(environ: dict[str, str] | os._Environ = os.environ) -> float:
    """The threshold this process runs with, read once at start-up."""
    raw = environ.get(ENV_STUCK_S, "")
    try:
        value = float(raw) if raw else DEFAULT_STUCK_S
    except ValueError:
        raise SystemExit(f"{ENV_STUCK_S}={raw!r} is not a number of seconds (0 turns the watchdog off)") from None
    if value < 0:
        raise SystemExit(f"{ENV_STUCK_S}={raw!r} must be >= 0 (0 turns the watchdog off)")
    return value


async def watch_loop(stuck_s: float) -> None:
    """Run for the life of the loop (cancel it to stop watching)."""
    if stuck_s <= 0:
        return
    log.info("loop watchdog: if this loop stalls for %.0fs, every thread's stack goes to this log "
             "(after a line 'Timeout') and the process exits 1", stuck_s)
    try:
        while True:
            faulthandler.dump_traceback_later(stuck_s, exit=True, file=sys.stderr)
            await asyncio.sleep(stuck_s / 4)
    finally:
        faulthandler.cancel_dump_traceback_later()
