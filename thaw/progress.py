"""Progress lines for a call that waits: what the platform is doing for the function (a pod placed,
starting cold, restoring from a snapshot, ready, failed), read from the gateway's pods view.

`PodWatch` turns successive views into the lines worth printing (only changes; nothing for pods
already serving, so a warm call says nothing); `InvokeProgress` runs it in a background thread
while a synchronous call is in flight, after a grace period, and stops when the call returns.
"""

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from thaw.errors import ThawError
from thaw.types import SERVING_STATES, PodList

QUIET_FOR_S = 1.0  # a call answered sooner shows nothing
EVERY_S = 0.25


class PodWatch:
    """The lines that say how `fn`'s pods changed between views. `since_ms`: when the call
    started (wall clock), so pods that failed before it are not blamed on it."""

    def __init__(self, fn: str, since_ms: int):
        self.fn, self.since_ms = fn, since_ms
        self.said: dict[str, str] = {}  # pod -> the last phase told
        self.started: set[str] = set()  # pods told as coming up
        self._told_waiting = False

    def lines(self, view: PodList, elapsed_s: float) -> list[str]:
        out = []
        mine = [p for p in view.pods if p.fn == self.fn]
        for pod in mine:
            phase = _phase(pod)
            if phase is None or self.said.get(pod.pod) == phase:
                continue
            if pod.state in SERVING_STATES:
                if pod.pod not in self.started:
                    continue  # serving before we looked: warm, nothing to tell
                self.said[pod.pod] = phase
                out.append(f"pod {pod.pod} ready ({self._at(pod.state_at_ms, elapsed_s):.1f}s)")
                continue
            self.said[pod.pod] = phase
            self.started.add(pod.pod)
            out.append(f"{phase} ({elapsed_s:.1f}s)")
        for pod in view.failed:
            if pod.fn != self.fn or pod.pod in self.said and self.said[pod.pod] == "failed":
                continue
            if pod.state_at_ms and pod.state_at_ms < self.since_ms and pod.pod not in self.started:
                continue  # failed before this call
            self.said[pod.pod] = "failed"
            first = (pod.reason or "no reason recorded").splitlines()[0]
            out.append(f"pod {pod.pod} failed to start ({elapsed_s:.1f}s): {first}; its output: "
                       f"`thaw logs {self.fn} --pod {pod.pod}`")
        if not mine and not self.said and not self._told_waiting:
            self._told_waiting = True
            out.append(f"waiting for a worker to be placed ({elapsed_s:.1f}s)")
        return [f"[thaw] {self.fn}: {line}" for line in out]

    def _at(self, state_at_ms: int, elapsed_s: float) -> float:
        """Seconds into the call when a state began, by the pod's own time stamp when it is
        plausible (the view is polled; the call may have returned since), else now."""
        at = (state_at_ms - self.since_ms) / 1000
        return at if 0 <= at <= elapsed_s else elapsed_s


def _phase(pod) -> str | None:
    where = f" on {pod.node}" if pod.node else ""
    if pod.state == "pending":
        return f"pod {pod.pod} placed{where}, waiting to start"
    if pod.state == "starting":
        return f"pod {pod.pod} starting (cold){where}"
    if pod.state == "restoring":
        return f"pod {pod.pod} restoring from snapshot {pod.snapshot or '?'}{where}"
    if pod.state == "standby":
        return f"pod {pod.pod} on standby{where}"
    if pod.state in SERVING_STATES:
        return "ready"
    return None  # draining, stopped: not this call's business


class InvokeProgress:
    """While a `with` block runs a call of `fn`, after `quiet_for_s`, print what its pods do to
    `out` (stderr), polling `pods()` every `every_s`; on exit, one last look tells a pod that
    came up meanwhile as ready. Polling failures end the progress quietly: it is only a view."""

    def __init__(self, fn: str, pods: Callable[[], PodList], out: TextIO | None = None,
                 quiet_for_s: float = QUIET_FOR_S, every_s: float = EVERY_S):
        self.fn, self._pods, self._out = fn, pods, out or sys.stderr
        self._quiet_for_s, self._every_s = quiet_for_s, every_s
        self._stop = threading.Event()
        self._lock = threading.Lock()  # held while printing; the caller prints its result after
        self._thread: threading.Thread | None = None
        self.watch: PodWatch | None = None
        self.printed = 0

    def __enter__(self) -> "InvokeProgress":
        self._t0 = time.monotonic()
        self.watch = PodWatch(self.fn, int(time.time() * 1000))
        self._thread = threading.Thread(target=self._run, name=f"progress-{self.fn}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=0.2)  # never long: a poll in flight prints nothing now
        if exc[0] is None and self.watch is not None and self.watch.started - set(_ready(self.watch)):
            self._look()  # a pod told as starting has likely come up: say so

    def _run(self) -> None:
        if self._stop.wait(self._quiet_for_s):
            return
        while not self._stop.is_set():
            if not self._look():
                return
            self._stop.wait(self._every_s)

    def _look(self) -> bool:
        try:
            view = self._pods()
        except ThawError:
            return False
        with self._lock:
            if self._stop.is_set() and threading.current_thread() is self._thread:
                return False  # the call returned meanwhile: its caller looks once more itself
            if self.watch is None:
                return False
            lines = self.watch.lines(view, time.monotonic() - self._t0)
            for line in lines:
                print(line, file=self._out, flush=True)
            self.printed += len(lines)
        return True


def _ready(watch: PodWatch) -> list[str]:
    return [pod for pod, phase in watch.said.items() if phase in ("ready", "failed")]
