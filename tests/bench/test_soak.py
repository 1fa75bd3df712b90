"""One minute of the soak benchmark through a real `thaw up`: two functions woken again and again
from zero must answer every call, restore from their snapshot after the first one exists, and
leave the services' open fds flat.

Needs root and a working CRIU (`sudo infra/install-criu.sh`); skipped without them, since every
wake-up would then be a cold start by design.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak_report import FD_GROWTH_MAX, RESTORED_MIN_PCT

pytestmark = [pytest.mark.slow, pytest.mark.criu]
ROOT = Path(__file__).resolve().parents[2]
CRIU = "/usr/local/sbin/criu"


@pytest.fixture(scope="module")
def criu_works():
    hint = "run `sudo infra/install-criu.sh` and the tests as root"
    if os.geteuid() != 0:
        pytest.skip(f"the soak restores snapshots, which needs root: {hint}")
    try:
        out = subprocess.run([CRIU, "check"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no usable CRIU ({exc}): {hint}")
    if out.returncode:
        pytest.skip(f"`criu check` fails: {(out.stdout + out.stderr)[-300:]}: {hint}")


@pytest.fixture(scope="module")
def soak(criu_works, tmp_path_factory) -> dict:
    """The JSON of a 60 s soak with two functions; its output is shown when an assertion fails."""
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    # The call deadline is shorter than the default so a hang cannot push the test past ~2.5 min.
    run = subprocess.run([sys.executable, "-m", "bench.soak", "--duration-s", "60", "--functions", "2",
                          "--call-timeout-s", "40", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=170)
    print(run.stdout[-6000:], run.stderr[-3000:])
    assert out.exists(), f"the soak wrote no JSON (exit {run.returncode}):\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    return json.loads(out.read_text())


def test_no_call_hangs_or_fails(soak):
    assert soak["calls"]["hung"] == 0, soak["calls"]["examples"]
    assert soak["calls"]["errors"] == 0, soak["calls"]["examples"]


def test_each_function_is_woken_from_zero_at_least_three_times(soak):
    per_fn = soak["wakeups"]["per_function"]
    assert len(per_fn) == 2 and all(n >= 3 for n in per_fn.values()), per_fn


def test_wake_ups_after_the_first_snapshot_are_restores(soak):
    w = soak["wakeups"]
    assert w["after_snapshot"] > 0, "no snapshot was taken during the soak"
    assert w["restored_pct_after_snapshot"] >= RESTORED_MIN_PCT, (w["fallback_reasons"], w["unanswered"], w["timeline"])


def test_open_fds_of_every_service_stay_flat(soak):
    assert soak["processes"], "no service was sampled twice after the warm-up"
    grown = [p for p in soak["processes"] if p["fds_growth"] > FD_GROWTH_MAX]
    assert not grown, grown


def test_the_platform_runs_to_the_end_and_stops_cleanly(soak):
    assert soak["platform"] == {"exited_early": "", "stopped_cleanly": True, "leftover_pids": []}
