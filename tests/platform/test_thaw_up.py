"""`thaw up` as a person runs it: starts everything, serves a deployed function, and Ctrl-C
stops every process it started, workers included."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from thaw_core.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def processes_with_env(marker: bytes) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_thaw_up_serves_and_ctrl_c_stops_everything(tmp_path):
    node = f"up-{os.urandom(3).hex()}"
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "{node}"\nforce_mock_gpus = true\n')
    port = free_port()
    thaw = Path(sys.executable).parent / "thaw"
    proc = subprocess.Popen([str(thaw), "--state-dir", str(tmp_path / "state"), "up", "--port", str(port),
                             "--config", str(config), "--deploy", str(ROOT / "examples/echo/function.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "up: HTTP" in line or proc.poll() is not None:
                break
        assert "up: HTTP" in lines[-1], "".join(lines)
        key = (tmp_path / "state" / "credentials").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/functions/echo/invoke", data=b"hi",
                                     headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.read() == b"hi"
        assert processes_with_env(f"THAW_NODE={node}".encode()), "a worker runs for the echo call"

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "[thaw] stopped" in out
        assert processes_with_env(f"THAW_NODE={node}".encode()) == [], "no worker outlives thaw up"
        leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
        assert leftover == [], f"processes of this platform still run: {leftover}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # On a failure above, the components (each in its own session) would outlive the test.
        stray = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
        for pid in [int(p) for p in stray] + processes_with_env(f"THAW_NODE={node}".encode()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
