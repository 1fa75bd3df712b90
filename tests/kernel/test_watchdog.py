"""A service whose event loop stops turning writes every thread's stack and exits non-zero,
so its supervisor restarts it; a service whose loop keeps turning is left alone."""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SERVICE = """
import asyncio, os, signal, sys, time
from thaw_core.process import run_until_signalled

def freeze_the_loop():
    time.sleep(120)  # what a deadlocked fork or a blocking call does to the loop

async def main(stop):
    if sys.argv[1] == "freeze":
        await asyncio.sleep(0.3)
        freeze_the_loop()
    else:
        loop = asyncio.get_running_loop()
        loop.call_later(3.0, os.kill, os.getpid(), signal.SIGTERM)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        print("stopped cleanly", flush=True)

run_until_signalled(main)
"""


def run_service(tmp_path: Path, mode: str, stuck_s: str) -> tuple[int, str, float]:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script), mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "THAW_LOOP_STUCK_S": stuck_s, "PYTHONPATH": str(ROOT)})
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_a_stuck_loop_dumps_every_thread_and_exits_non_zero(tmp_path):
    code, out, took_s = run_service(tmp_path, "freeze", "1.5")
    assert code == 1, out
    assert "Timeout (0:00:01" in out
    assert "freeze_the_loop" in out, "the log shows where the loop is stuck"
    assert took_s < 20


def test_a_turning_loop_is_never_taken_for_stuck(tmp_path):
    code, out, _ = run_service(tmp_path, "healthy", "0.5")
    assert code == 0, out
    assert "stopped cleanly" in out
    assert "Timeout" not in out


def test_a_bad_threshold_is_refused_with_what_to_set(tmp_path):
    code, out, _ = run_service(tmp_path, "healthy", "soon")
    assert code != 0
    assert "THAW_LOOP_STUCK_S='soon' is not a number of seconds" in out


def probe(alive: Path, max_age_s: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thaw_core.liveness", str(alive), max_age_s], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_the_liveness_probe_passes_while_the_loop_turns_and_fails_once_it_stops(tmp_path):
    """What a Kubernetes exec probe sees (watchdog off here, so the frozen service stays)."""
    script, alive = tmp_path / "service.py", tmp_path / "alive"
    script.write_text(SERVICE)
    env = {**os.environ, "THAW_LOOP_STUCK_S": "0", "THAW_LIVENESS_FILE": str(alive), "PYTHONPATH": str(ROOT)}
    assert probe(alive, "5").returncode == 1, "no file before the service starts"
    service = subprocess.Popen([sys.executable, str(script), "freeze"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 20
        while not alive.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert probe(alive, "5").returncode == 0
        time.sleep(2.5)  # the loop froze 0.3 s in
        stale = probe(alive, "2")
        assert stale.returncode == 1
        assert "the service's loop is not turning" in stale.stderr
    finally:
        service.kill()
        service.wait()


def test_the_probe_names_a_bad_limit():
    done = probe(Path("/nonexistent"), "soon")
    assert done.returncode == 2 and "MAX_AGE_S='soon' is not a number of seconds" in done.stderr
