"""The platform's servers for one fleet replay, started as `thaw up` starts them (thaw/launcher.py):
nats-server from a config with a bus user per role and per node, streams provisioned by the
operator, valkey-server with a store user per role; then the real placement worker processes.

Everything lives under one state directory of the caller's; `stop` ends only what was started here.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bus_schemas import permissions
from thaw_core import bus_auth, servers
from thaw_core.bus_auth import Credentials
from thaw_core.ports import free_port
from thaw_core.store import acl
from thaw_core.store.acl import Creds


@dataclass
class Platform:
    """Running servers and placement workers, and the credentials the bench acts with."""

    state_dir: Path
    nats: servers.Server
    redis: servers.Server
    secrets_dir: Path
    setup_s: dict[str, float] = field(default_factory=dict)  # step -> seconds it took
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    profile_dir: Path | None = None

    def bus_creds(self, user: str) -> Credentials:
        return bus_auth.read_credentials(bus_auth.credentials_path(self.secrets_dir, user), user)

    def store_creds(self, role: str) -> Creds:
        return acl.read_credentials(acl.credentials_path(self.secrets_dir, role), role)

    def start_workers(self, count: int, node_timeout_s: float, profile_dir: Path | None = None) -> list[str]:
        """`count` real placement workers (`python -m placement`), as thaw up starts one, each
        with the placement role's credentials and a name of its own (its capacity durable).
        With `profile_dir`, each runs under cProfile (bench/fleet/profiled_worker.py) and
        `dump_profiles` writes `<name>.prof` there."""
        names = [f"placement-{i}" for i in range(1, count + 1)]
        self.profile_dir = profile_dir
        for name in names:
            log = open(self.state_dir / "logs" / f"{name}.log", "ab")
            program = ["-m", "bench.fleet.profiled_worker", str(profile_dir / f"{name}.prof")] if profile_dir \
                else ["-m", "placement"]
            self.workers[name] = subprocess.Popen(
                [sys.executable, *program, "--nats", self.nats.url, "--redis", self.redis.url,
                 "--name", name, "--node-timeout", str(node_timeout_s),
                 "--nats-credentials", str(bus_auth.credentials_path(self.secrets_dir, permissions.PLACEMENT)),
                 "--redis-credentials", str(acl.credentials_path(self.secrets_dir, acl.PLACEMENT))],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return names

    def dump_profiles(self, wait_s: float = 30) -> None:
        """Ask every profiled worker to write its profile (SIGUSR1), and wait for the files."""
        for proc in self.workers.values():
            proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not all(p.exists() for p in self.profiles()):
            time.sleep(0.2)
        time.sleep(0.5)  # the file is written in one go, but not at once

    def profiles(self) -> list[Path]:
        return [self.profile_dir / f"{name}.prof" for name in self.workers] if self.profile_dir else []

    def processes(self) -> dict[str, list[int]]:
        """What shares the host during a run, by role: the placement workers, each server, and
        this process (the simulated agents and the request publisher)."""
        return {"placement workers": [p.pid for p in self.workers.values()], "nats-server": [self.nats.process.pid],
                "valkey-server": [self.redis.process.pid], "agents and bench": [os.getpid()]}

    def check_workers(self) -> None:
        """Raise if a placement worker exited (its log says why)."""
        for name, proc in self.workers.items():
            if proc.poll() is not None:
                raise RuntimeError(f"placement worker {name} exited with code {proc.returncode}; "
                                   f"see {self.state_dir / 'logs' / (name + '.log')}")

    def stop(self) -> None:
        """Workers first (SIGTERM, then SIGKILL after 30 s), then the servers."""
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.redis.stop()
        self.nats.stop()


def start_platform(state_dir: Path, nodes: list[str]) -> Platform:
    """nats-server and valkey-server on free loopback ports with the platform's users for
    `nodes` (an agent and a snapshotter user per node), streams provisioned; no workers yet."""
    secrets_dir, logs = state_dir / "secrets", state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    took: dict[str, float] = {}
    t = time.monotonic()
    port = free_port()
    config = bus_auth.write_platform_config(secrets_dir, nodes, listen=f"127.0.0.1:{port}",
                                            store_dir=state_dir / "nats")
    took["bus users and config"] = time.monotonic() - t
    t = time.monotonic()
    nats = servers.start_nats(state_dir / "nats", port=port, log_path=logs / "nats-server.log",
                              config_args=bus_auth.server_args(config))
    took["nats-server start"] = time.monotonic() - t
    try:
        t = time.monotonic()
        operator = bus_auth.read_credentials(bus_auth.credentials_path(secrets_dir, permissions.OPERATOR))
        asyncio.run(bus_auth.provision_streams(nats.url, operator))
        took["streams"] = time.monotonic() - t
        t = time.monotonic()
        users = acl.valkey_args(acl.write_acl_file(state_dir / "valkey-users.acl", acl.ensure_credentials(secrets_dir)))
        redis = servers.start_redis(state_dir / "redis", log_path=logs / "redis-server.log", extra_args=users)
        took["valkey-server start"] = time.monotonic() - t
    except BaseException:
        nats.stop()
        raise
    return Platform(state_dir, nats, redis, secrets_dir, took)
