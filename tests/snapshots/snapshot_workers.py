"""Start and talk to the reference worker (examples/torchlike) the way the process runtime must:
init of its own PID namespace, own session, stdin /dev/null, log opened O_APPEND."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "examples" / "torchlike" / "worker.py"
MODEL_DIR = Path(os.environ.get("THAW_TEST_MODEL_DIR", "/var/cache/thaw-test/models"))
WORKER_MODEL_MIB = 64  # small: these tests prove behaviour; bench/ measures the 1 GiB case
WORKER_IMPORT_FUNCS = 200


def worker_module():
    spec = importlib.util.spec_from_file_location("torchlike_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def worker_env(port: int, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port),
            "THAW_MODEL_DIR": str(MODEL_DIR), "THAW_MODEL_MIB": str(WORKER_MODEL_MIB),
            "THAW_IMPORT_FUNCS": str(WORKER_IMPORT_FUNCS), **extra}


class Worker:
    """A cold-started worker. `pid` is the namespace init, the pid CRIU dumps."""

    def __init__(self, port: int, log_path: Path, model_mib: int = WORKER_MODEL_MIB,
                 import_funcs: int = WORKER_IMPORT_FUNCS):
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        env = worker_env(port, THAW_MODEL_MIB=str(model_mib), THAW_IMPORT_FUNCS=str(import_funcs))
        try:
            self.unshare = subprocess.Popen(
                ["unshare", "--pid", "--fork", "setsid", sys.executable, str(WORKER)],
                env=env, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT)
        finally:
            os.close(fd)
        self.port = port
        self.pid = self._child_pid()

    def _child_pid(self) -> int:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            kids = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children").read_text().split()
            if kids:
                return int(kids[0])
            time.sleep(0.01)
        raise RuntimeError("unshare did not fork the worker")

    def kill(self) -> None:
        kill_pid(self.pid)
        self.unshare.wait(5)


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def infer(port: int, text: str = "hello", timeout_s: float = 5.0, host: str = "127.0.0.1") -> dict:
    req = urllib.request.Request(f"http://{host}:{port}/infer", data=json.dumps({"input": text}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read())


def wait_answers(port: int, timeout_s: float = 60.0, host: str = "127.0.0.1") -> dict:
    """Poll /infer until the worker answers; return its first answer."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return infer(port, timeout_s=2.0, host=host)
        except OSError as e:
            last = e
            time.sleep(0.005)
    raise TimeoutError(f"worker on {host}:{port} did not answer in {timeout_s}s: {last}")
