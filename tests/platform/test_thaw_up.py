"""`thaw up` as a person runs it: starts everything, serves a deployed function, restarts a
component that dies, and Ctrl-C stops every process it started, workers included, within its
stated bound even when services are frozen."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from agents.identity import default_node_name
from thaw import supervisor
from thaw.launcher import clear_node_leftovers
from thaw.supervisor import STOP_BOUND_S
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


class ThawUp:
    """`thaw up` started as a person does, in its own session like a terminal's job."""

    def __init__(self, tmp_path: Path, named: bool = True):
        """`named`: give the node a name of its own; else it gets the default, as a person's does."""
        self.tmp_path, self.port = tmp_path, free_port()
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.state = tmp_path / "state"
        self.node = f"up-{os.urandom(3).hex()}" if named else default_node_name(self.state / "agent")
        config = tmp_path / "node.toml"
        name = f'name = "{self.node}"\n' if named else ""
        config.write_text(f'[node]\n{name}force_mock_gpus = true\n')
        thaw = Path(sys.executable).parent / "thaw"
        self.proc = subprocess.Popen([str(thaw), "--state-dir", str(self.state), "up", "--port", str(self.port),
                                      "--config", str(config), "--deploy", str(ROOT / "examples/echo/function.toml")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []

    def wait_up(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            self.lines.append(line)
            if "up: HTTP" in line or self.proc.poll() is not None:
                break
        assert "up: HTTP" in self.lines[-1], "".join(self.lines)

    def invoke(self, body: bytes = b"hi") -> bytes:
        key = (self.state / "credentials").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/functions/echo/invoke", data=body,
                                     headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read()

    def components(self) -> dict:
        return json.loads((self.state / "run" / "components.json").read_text())["components"]

    def workers(self) -> list[int]:
        return processes_with_env(f"THAW_NODE={self.node}".encode())

    def ctrl_c(self, timeout_s: float) -> tuple[str, float]:
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, _ = self.proc.communicate(timeout=timeout_s)
        return "".join(self.lines) + out, time.monotonic() - started

    def leftovers(self) -> list[int]:
        """What of this platform still runs: its state dir in a command line, a worker of its
        node, or a component thaw up recorded (placement's and the servers' command lines name
        no state dir)."""
        found = subprocess.run(["pgrep", "-f", str(self.tmp_path)], capture_output=True, text=True).stdout.split()
        recorded = [c["pid"] for c in self.components().values()] if (self.state / "run").exists() else []
        return sorted({int(p) for p in found} | set(self.workers()) | {p for p in recorded if alive(p)})

    def clean_up(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # On a failure above, the components (each in its own session) would outlive the test.
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(alive(p) for p in self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        clear_node_leftovers([self.node])  # what its stop would have removed, had it run


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := check()):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {check()!r}")


def test_thaw_up_restarts_killed_components_and_stops_frozen_ones_within_its_bound(tmp_path):
    up = ThawUp(tmp_path)
    try:
        up.wait_up()
        assert up.invoke() == b"hi"
        for name in ("snapshotter", "agent", "gateway"):
            if name not in up.components():
                continue  # no snapshotter where CRIU is unusable
            old = up.components()[name]["pid"]
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: up.components()[name]["restarts"] == 1 and alive(up.components()[name]["pid"]),
                     30, f"{name} to be restarted (components: {up.components()})")
            assert up.components()[name]["pid"] != old
        wait_for(lambda: _answers(up), 60, "echo answering through the restarted gateway and agent")
        assert up.workers(), "a worker runs, adopted by the restarted agent"

        frozen = [up.components()[n]["pid"] for n in ("agent", "gateway")]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)  # frozen: deaf to SIGTERM, the worst case for a stop
        out, took_s = up.ctrl_c(timeout_s=STOP_BOUND_S + 30)
        assert up.proc.returncode == 0, out
        assert "[thaw] stopped" in out
        assert "agent did not stop within" in out
        assert took_s <= STOP_BOUND_S + 5, f"stopping took {took_s:.1f}s"
        assert up.leftovers() == [], "nothing thaw up started outlives it, workers of a frozen agent included"
    finally:
        up.clean_up()


def _answers(up: ThawUp) -> bool:
    try:
        return up.invoke(b"again") == b"again"
    except OSError:
        return False


def test_thaw_up_serves_and_ctrl_c_stops_everything(tmp_path):
    up = ThawUp(tmp_path)
    try:
        up.wait_up()
        assert up.invoke() == b"hi"
        assert up.workers(), "a worker runs for the echo call"
        out, _ = up.ctrl_c(timeout_s=STOP_BOUND_S + 30)
        assert up.proc.returncode == 0, out
        assert "[thaw] stopped" in out
        assert up.leftovers() == [], "no process of this platform outlives thaw up, workers included"
    finally:
        up.clean_up()


def test_a_second_stop_signal_hurries_the_stop_and_never_interrupts_it(monkeypatch):
    """A second Ctrl-C that came while the first was starting the stop used to raise there too,
    cutting the stop short with every component left running."""
    monkeypatch.setattr(supervisor, "_stopping", threading.Event())
    monkeypatch.setattr(supervisor, "_hurry_asked", threading.Event())
    with pytest.raises(KeyboardInterrupt):
        supervisor.on_stop_signal(signal.SIGINT, None)
    assert not supervisor.hurry_asked()
    supervisor.on_stop_signal(signal.SIGTERM, None)  # returns: no exception
    assert supervisor.hurry_asked()


def test_two_thaw_ups_on_one_host_never_touch_each_others_workers(tmp_path):
    """Default node names, as two people on one machine would have: each platform's agent
    restarts and stops only its own workers."""
    a, b = ThawUp(tmp_path / "a", named=False), ThawUp(tmp_path / "b", named=False)
    try:
        a.wait_up()
        b.wait_up()
        assert a.node != b.node
        assert a.invoke(b"to a") == b"to a" and b.invoke(b"to b") == b"to b"
        b_workers = b.workers()
        assert b_workers and not set(b_workers) & set(a.workers())

        os.kill(a.components()["agent"]["pid"], signal.SIGKILL)  # a's new agent reconciles its node
        wait_for(lambda: a.components()["agent"]["restarts"] == 1, 30, "a's agent to be restarted")
        wait_for(lambda: _answers(a), 60, "a to answer again")
        out, _ = a.ctrl_c(timeout_s=STOP_BOUND_S + 30)
        assert a.proc.returncode == 0, out
        assert a.leftovers() == []

        assert b.workers() == b_workers and all(alive(p) for p in b_workers), "b's workers untouched"
        assert b.invoke(b"still b") == b"still b"
    finally:
        a.clean_up()
        b.clean_up()


def test_thaw_ups_bus_and_store_let_no_one_in_without_a_role_and_keep_the_secrets_private(tmp_path):
    """The minting attack (one SET of thaw:apikey:<sha256> made a working key for any tenant),
    and reading every caller's Authorization header by subscribing to `>` on the bus."""
    import re
    import stat

    import redis

    up = ThawUp(tmp_path)
    try:
        up.wait_up()
        url = re.search(r"valkey-server ready at (\S+)", "".join(up.lines)).group(1)
        outsider = redis.Redis.from_url(url)
        try:
            outsider.set("thaw:apikey:" + "0" * 64, "default")
            raise AssertionError("the store took a write from a client with no credentials")
        except redis.exceptions.AuthenticationError:
            pass
        except redis.exceptions.ResponseError as exc:
            assert "NOAUTH" in str(exc) or "NOPERM" in str(exc), exc
        secrets = up.state / "secrets"
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
        assert {stat.S_IMODE(p.stat().st_mode) for p in secrets.iterdir()} == {0o600}
        users = (up.state / "valkey-users.acl").read_text()
        assert not [p for p in secrets.glob("*.json") if json.loads(p.read_text())["password"] in users], \
            "the ACL file holds password hashes only"
        made = subprocess.run([sys.executable, "-m", "thaw.cli", "--state-dir", str(up.state), "keys",
                               "--tenant", "team-b", "--role", "invoker", "--redis", url],
                              capture_output=True, text=True, timeout=30)
        assert made.returncode == 0 and made.stdout.startswith("thaw_"), made.stderr  # the operator still can
        assert up.invoke() == b"hi"
        _async_call_completes_on_the_locked_bus(up)
        bus = re.search(r"nats-server ready at (\S+)", "".join(up.lines)).group(1)
        anyone = subprocess.run([sys.executable, "-c", "import asyncio, nats, sys\n"
                                 "async def main():\n    await nats.connect(sys.argv[1], allow_reconnect=False, "
                                 "max_reconnect_attempts=0, connect_timeout=3)\n"
                                 "asyncio.run(main())", bus], capture_output=True, text=True, timeout=30)
        assert anyone.returncode != 0 and "authorization" in anyone.stderr.lower(), anyone.stderr[-500:]
        client = subprocess.run([sys.executable, "-m", "thaw.cli", "--state-dir", str(up.state), "--url",
                                 f"http://127.0.0.1:{up.port}", "invoke", "echo", "over-the-bus", "--nats", bus],
                                capture_output=True, text=True, timeout=60)
        assert client.stdout.strip() == "over-the-bus", client.stderr[-500:]
        up.ctrl_c(timeout_s=STOP_BOUND_S + 30)
    finally:
        up.clean_up()


def _async_call_completes_on_the_locked_bus(up: ThawUp) -> None:
    """The gateway's bus user queues, consumes, stores and lists async calls (and reads the DLQ)
    with its own rights only."""
    def thaw(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "thaw.cli", "--state-dir", str(up.state), "--url",
                               f"http://127.0.0.1:{up.port}", *args], capture_output=True, text=True, timeout=30)
    queued = thaw("invoke", "echo", "later", "--async")
    assert queued.returncode == 0, queued.stderr
    call_id = queued.stdout.strip()
    wait_for(lambda: "succeeded" in thaw("calls", call_id).stdout, 30, "the async call to succeed")
    listed, dead = thaw("calls"), thaw("dlq")
    assert call_id in listed.stdout, listed.stderr
    assert dead.returncode == 0 and "empty" in dead.stdout, dead.stderr
