"""`thaw deploy --wait` for a function that snapshots: after its first worker serves, the wait
reports the first snapshot (id, size, how long it took) or says why none came, and never fails
the deploy for it (without a snapshot pods cold-start: slower, still served)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus_schemas import redis_keys as K
from thaw import Client

from tests.conftest import eventually

WARM = Path(__file__).resolve().parent / "warm_worker.py"
THAW = str(Path(sys.executable).parent / "thaw")


def function_file(folder: Path, name: str, snapshot: bool = True) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\ncommand = ["{{python}}", "{WARM}"]\nsnapshot = {str(snapshot).lower()}\n'
                    f'env = {{ WARM_IMPORT_S = "0.5" }}\n'
                    "[resources]\ngpu_count = 0\ncpu_milli = 500\nmemory_mib = 128\n"
                    "[scaling]\nmin_pods = 1\nmax_pods = 1\nidle_timeout_s = 600\nstart_timeout_s = 30\n")
    return path


def deploy_wait(h, key: str, path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([THAW, "--url", h.url, "--key", key, "deploy", str(path), "--wait", *extra],
                          capture_output=True, text=True, timeout=120)


async def test_without_a_snapshotter_the_wait_says_no_snapshot_came_and_the_deploy_succeeds(
        platform, api_key, tmp_path):
    done = deploy_wait(platform, api_key, function_file(tmp_path, "nosnap"), "--snapshot-wait", "2")
    assert done.returncode == 0, done.stderr
    assert "nosnap is serving" in done.stdout and "waiting up to 2s for its first snapshot" in done.stdout
    assert "no snapshot of nosnap within 2s" in done.stdout, done.stdout
    skipped = deploy_wait(platform, api_key, function_file(tmp_path, "skipped"), "--snapshot-wait", "0")
    assert skipped.returncode == 0 and "snapshot" not in skipped.stdout, skipped.stdout
    off = deploy_wait(platform, api_key, function_file(tmp_path, "off", snapshot=False))
    assert off.returncode == 0 and "off is serving" in off.stdout and "snapshot" not in off.stdout, off.stdout


@pytest.mark.criu
async def test_with_a_snapshotter_the_wait_reports_the_first_snapshot_once_taken(platform, api_key, tmp_path, r):
    if os.geteuid() != 0 or subprocess.run(["/usr/local/sbin/criu", "check"], capture_output=True).returncode:
        pytest.fail("needs root and a working CRIU 4.x: run `sudo infra/install-criu.sh` and the tests as root")
    platform.start("snapshotter")
    await eventually(lambda: r.get(K.snapshotter(platform.node)), 20, what="the snapshotter to announce itself")

    path = function_file(tmp_path, "snappy")
    done = deploy_wait(platform, api_key, path)
    assert done.returncode == 0, done.stderr + done.stdout
    snaps = Client(platform.url, api_key).snapshots()
    assert [s.fn for s in snaps] == ["snappy"], snaps
    ready = [line for line in done.stdout.splitlines() if f"snapshot {snaps[0].id} ready: " in line]
    assert ready and "raw) on " + platform.node in ready[0] and "after the worker served" in ready[0], done.stdout
    again = deploy_wait(platform, api_key, path)  # same spec: the snapshot still restores it
    assert again.returncode == 0 and f"snapshot {snaps[0].id} of this spec is there already" in again.stdout, \
        again.stdout
