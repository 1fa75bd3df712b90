"""The processes `thaw up` runs: start each, restart one that dies, stop all within a bound.

- Restart: a component that exits while the platform runs (a crash, kill -9, the loop
  watchdog's exit) is restarted after a back-off of 1 s, doubling to 30 s while it keeps
  failing, back to 1 s once it has run for a minute. What is left of its process group (e.g. a
  child stuck between fork and exec) is killed first.
- Status: `<state dir>/run/components.json` holds each component's pid, restart count and start
  time, rewritten atomically at every (re)start, for operators and `bench.soak`.
- Stop, bounded: SIGTERM to every service's process group at once; after `SERVICES_GRACE_S`,
  SIGKILL to the groups still there (a frozen or stopped service included); then the servers
  (nats-server, valkey-server) likewise with `SERVERS_GRACE_S`; then every orphan of the tree
  (workers, restored workers) is killed (see orphans.py). Ctrl-C again skips the waiting.
  The whole stop takes at most STOP_BOUND_S.
"""

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from thaw import orphans

SERVICES_GRACE_S = 20.0  # an agent gives its workers 10 s, then its own clean-up 5 s more
SERVERS_GRACE_S = 5.0
ORPHANS_S = 5.0
STOP_BOUND_S = SERVICES_GRACE_S + SERVERS_GRACE_S + ORPHANS_S
FIRST_BACKOFF_S, MAX_BACKOFF_S, HEALTHY_AFTER_S = 1.0, 30.0, 60.0
_stopping, _hurry_asked = threading.Event(), threading.Event()


def on_stop_signal(signum, frame) -> None:
    """SIGINT/SIGTERM handler for a process that runs a Supervisor: the first signal raises
    KeyboardInterrupt (the caller stops everything); a later one asks that stop to hurry and
    never interrupts it, however soon it comes (a stop cut short leaves everything running)."""
    if _stopping.is_set():
        _hurry_asked.set()
        return
    _stopping.set()
    raise KeyboardInterrupt


def hurry_asked() -> bool:
    return _hurry_asked.is_set()


@dataclass
class Component:
    name: str
    start: Callable[[], subprocess.Popen]
    log_path: Path
    proc: subprocess.Popen  # the running one; a restart replaces it
    server: bool = False  # stopped after every service, since the services need it to stop
    restarts: int = 0
    started_at: float = 0.0
    started_ms: int = 0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None


class Supervisor:
    def __init__(self, status_path: Path, say: Callable[[str], None]):
        self.components: dict[str, Component] = {}
        self.status_path, self._say = status_path, say
        self._hurry = False
        self.subreaper = orphans.become_subreaper()

    def add(self, name: str, start: Callable[[], subprocess.Popen], log_path: Path, server: bool = False) -> None:
        """Start a component now; an exception from `start` propagates (start-up fails)."""
        c = Component(name, start, log_path, start(), server)
        self.components[name] = c
        self._started(c)

    def proc(self, name: str) -> subprocess.Popen:
        return self.components[name].proc

    def check(self) -> None:
        """Restart what has exited (after its back-off) and reap orphans. Call it often."""
        now = time.monotonic()
        for c in self.components.values():
            if c.restart_at is None and c.proc.poll() is not None:
                self._schedule_restart(c, now)
            elif c.restart_at is not None and now >= c.restart_at:
                self._restart(c)
        orphans.reap_orphans(self._ours())

    def watch(self, every_s: float = 0.25) -> None:
        """Keep the components running (check() every `every_s`) until Ctrl-C, which propagates
        as KeyboardInterrupt for the caller to stop what it started."""
        while True:
            self.check()
            time.sleep(every_s)

    def _schedule_restart(self, c: Component, now: float) -> None:
        _kill_group(c.proc.pid)  # whatever it left in its group, e.g. a child stuck before exec
        ran_s = now - c.started_at
        if ran_s >= HEALTHY_AFTER_S:
            c.backoff_s = FIRST_BACKOFF_S
        c.restart_at = now + c.backoff_s
        self._say(f"{c.name} exited with code {c.proc.returncode} after {ran_s:.0f}s; restarting it in "
                  f"{c.backoff_s:g}s (its log: {c.log_path})")
        c.backoff_s = min(c.backoff_s * 2, MAX_BACKOFF_S)

    def _restart(self, c: Component) -> None:
        try:
            self._launch(c, restarts=c.restarts + 1)
        except Exception as exc:  # e.g. a server that did not listen in time: try again later
            c.restart_at = time.monotonic() + c.backoff_s
            self._say(f"{c.name} did not start again ({exc}); next try in {c.backoff_s:g}s")
            c.backoff_s = min(c.backoff_s * 2, MAX_BACKOFF_S)
            return
        self._say(f"{c.name} restarted (pid {c.proc.pid}, restart {c.restarts})")

    def _launch(self, c: Component, restarts: int = 0) -> None:
        c.proc = c.start()
        self._started(c, restarts)

    def _started(self, c: Component, restarts: int = 0) -> None:
        c.restarts = restarts
        c.started_at, c.started_ms, c.restart_at = time.monotonic(), int(time.time() * 1000), None
        self._write_status()

    def _write_status(self) -> None:
        status = {"components": {c.name: {"pid": c.proc.pid, "restarts": c.restarts, "started_ms": c.started_ms}
                                 for c in self.components.values()}}
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_name(f".{self.status_path.name}.tmp")
        tmp.write_text(json.dumps(status, indent=1))
        os.replace(tmp, self.status_path)

    def _ours(self) -> set[int]:
        return {c.proc.pid for c in self.components.values()}

    def stop(self) -> float:
        """Stop everything started, within STOP_BOUND_S; returns the seconds it took."""
        started = time.monotonic()
        previous = {sig: signal.signal(sig, self._on_second_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            services = [c for c in reversed(list(self.components.values())) if not c.server]
            servers = [c for c in reversed(list(self.components.values())) if c.server]
            self._stop_group(services, SERVICES_GRACE_S)
            self._stop_group(servers, SERVERS_GRACE_S)
            killed = orphans.kill_all_children(set(), ORPHANS_S)
            if killed:
                self._say(f"killed {len(killed)} process(es) left by the components (workers of a frozen agent?)")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return time.monotonic() - started

    def _stop_group(self, group: list[Component], grace_s: float) -> None:
        running = [c for c in group if c.proc.poll() is None]
        for c in running:
            _signal_group(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(c.proc.poll() is None for c in running) and time.monotonic() < deadline and not self.hurrying:
            time.sleep(0.05)
        for c in running:
            if c.proc.poll() is None:
                self._say(f"{c.name} did not stop within {grace_s:g}s; killing it")
            _kill_group(c.proc.pid)  # its group too: nothing it started there outlives it
            c.proc.wait()

    @property
    def hurrying(self) -> bool:
        return self._hurry or hurry_asked()

    def _on_second_signal(self, signum, frame) -> None:
        if not self._hurry:
            self._say("stopping now: killing what has not stopped yet")
        self._hurry = True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(pid: int) -> None:
    _signal_group(pid, signal.SIGKILL)
