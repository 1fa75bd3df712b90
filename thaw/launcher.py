"""`thaw up`: the whole platform on one machine, each component its own process.

Order: nats-server, valkey-server, placement, agent, snapshotter, gateway. Ctrl-C stops them in
reverse. State lives under `--state-dir` (default `.thaw/`): JetStream store, Redis append-only
file, worker logs, snapshots (`snapshotter/` is the node-local tier, `snapshots-shared/` stands
for the cluster-shared tier), and the API key printed at first start.

The snapshotter starts only when CRIU is usable here (`criu check` passes, which needs root and
CRIU 4.x); otherwise `thaw up` says why and every pod cold-starts.
"""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from thaw_core import servers
from thaw_core.ports import free_port


@dataclass
class Platform:
    state_dir: Path
    nats: servers.Server
    redis: servers.Server
    gateway_url: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
        for name, proc in reversed(list(self.procs.items())):
            try:
                proc.wait(25)  # a component bounds its own stop: grace, then 5 s (thaw_core.process)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.stop()
        self.nats.stop()


def say(msg: str) -> None:
    print(f"[thaw] {msg}", flush=True)


def start_component(name: str, args: list[str], log_dir: Path) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not answer {url} within {timeout_s}s")


def up(state_dir: Path, config: Path | None, http_port: int, nats_port: int | None = None,
       redis_port: int | None = None) -> Platform:
    """Start every component and return once the gateway answers /healthz."""
    logs = state_dir / "logs"
    say(f"starting nats-server (JetStream) ... store in {state_dir / 'nats'}")
    nats = servers.start_nats(state_dir / "nats", port=nats_port, log_path=logs / "nats-server.log")
    say(f"nats-server ready at {nats.url}")
    say("starting valkey-server (Redis protocol) ...")
    redis = servers.start_redis(state_dir / "redis", port=redis_port, log_path=logs / "redis-server.log", persist=True)
    say(f"valkey-server ready at {redis.url}")
    platform = Platform(state_dir, nats, redis, f"http://127.0.0.1:{http_port}")
    common = ["--nats", nats.url, "--redis", redis.url]
    try:
        platform.procs["placement"] = start_component("placement", ["-m", "placement", *common], logs)
        say("placement worker started")
        agent_args = ["-m", "agents", *common, "--state-dir", str(state_dir / "agent")]
        if config is not None:
            agent_args += ["--config", str(config)]
        platform.procs["agent"] = start_component("agent", agent_args, logs)
        say("node agent started")
        snapshotter_args = _snapshotter_args(state_dir, config, common)
        if snapshotter_args:
            platform.procs["snapshotter"] = start_component("snapshotter", snapshotter_args, logs)
            say("snapshotter started: warm workers are snapshotted once, later pods restore from them")
        platform.procs["gateway"] = start_component("gateway", ["-m", "gateway", *common, "--port", str(http_port)], logs)
        wait_http_ok(f"{platform.gateway_url}/healthz", 30, platform.procs["gateway"], "gateway")
        say(f"gateway ready at {platform.gateway_url}")
    except BaseException:
        platform.stop()
        raise
    return platform


def _snapshotter_args(state_dir: Path, config: Path | None, common: list[str]) -> list[str] | None:
    """Arguments for this node's snapshotter, or None (said why) when CRIU is not usable."""
    import asyncio

    from agents.config import load_agent_settings
    from snapshotter.criu import find_criu
    from snapshotter.errors import CriuMissing

    try:
        criu = asyncio.run(find_criu())
    except CriuMissing as exc:
        say(f"snapshots off, every pod cold-starts: {exc}")
        return None
    say(f"CRIU {criu.version} passes `criu check`")
    agent = load_agent_settings(config, "", "", state_dir)  # the node name and runtime the agent uses
    container = [] if agent.runtime != "container" else [
        "--runtime", "container", "--podman-socket", str(agent.container_socket)]
    return ["-m", "snapshotter", *common, "--node", agent.node, "--state-dir", str(state_dir / "snapshotter"),
            "--shared-dir", str(state_dir / "snapshots-shared"), *container]


def ensure_api_key(state_dir: Path, redis_url: str) -> str:
    """The key saved at first start (`.thaw/credentials`), created if missing or unknown."""
    import asyncio

    from thaw_core.store.apikeys import ApiKeys
    from thaw_core.store.client import connect_redis

    path = state_dir / "credentials"

    async def check_or_create() -> str:
        r = connect_redis(redis_url)
        try:
            keys = ApiKeys(r)
            if path.exists():
                key = path.read_text().strip()
                if await keys.tenant_of(key):
                    return key
            key = await keys.create("default")
            path.write_text(key + "\n")
            os.chmod(path, 0o600)
            return key
        finally:
            await r.aclose()

    return asyncio.run(check_or_create())


__all__ = ["Platform", "up", "ensure_api_key", "free_port", "say"]
