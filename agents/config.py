"""The node section of a Thaw config file (TOML), e.g.

    [node]
    name = "node-a"        # default: <host>-<6 hex of the state dir>, unique per host and state dir
    runtime = "process"
    [[node.mock_gpus]]
    model = "Mock-24G"
    vram_mib = 24576

Other `[node]` keys are the AgentSettings fields of the same name (e.g. `heartbeat_s`,
`expect_snapshotter`, `snapshotter_ping_timeout_s`, `snapshotter_down_after`, `sandbox`,
`pod_cidr`: the snapshotter of the node must be given the same `--pod-cidr`).
"""

import tomllib
from pathlib import Path

from agents.identity import default_node_name
from agents.settings import AgentSettings, MockGpu


class ConfigError(ValueError):
    pass


def load_agent_settings(path: Path | None, nats_url: str, redis_url: str, state_dir: Path,
                        node: str | None = None) -> AgentSettings:
    section = {}
    if path is not None:
        try:
            section = tomllib.loads(path.read_text()).get("node", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    mock = tuple(_mock_gpu(path, i, g) for i, g in enumerate(section.get("mock_gpus", [])))
    kwargs = {k: section[k] for k in ("runtime", "cpu_milli", "memory_mib", "heartbeat_s", "force_mock_gpus",
                                            "stop_workers_on_exit", "request_snapshots", "restore_timeout_s",
                                            "expect_snapshotter", "snapshotter_ping_timeout_s",
                                            "snapshotter_down_after", "sandbox", "pod_cidr")
              if k in section}
    if "container_socket" in section:
        kwargs["container_socket"] = Path(section["container_socket"])
    if "container_mounts" in section:
        kwargs["container_mounts"] = tuple(Path(m) for m in section["container_mounts"])
    if mock:
        kwargs["mock_gpus"] = mock
    _check_ping(path, kwargs)
    return AgentSettings(node=node or section.get("name") or default_node_name(state_dir), nats_url=nats_url, redis_url=redis_url,
                         state_dir=state_dir, **kwargs)


def _check_ping(path, kwargs: dict) -> None:
    timeout_s, down_after = kwargs.get("snapshotter_ping_timeout_s", 1.0), kwargs.get("snapshotter_down_after", 1)
    if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool) or timeout_s <= 0:
        raise ConfigError(f"{path}: node.snapshotter_ping_timeout_s must be a number of seconds > 0")
    if not isinstance(down_after, int) or isinstance(down_after, bool) or down_after < 1:
        raise ConfigError(f"{path}: node.snapshotter_down_after must be an integer >= 1 (consecutive missed pings)")


def _mock_gpu(path, i: int, g: dict) -> MockGpu:
    try:
        return MockGpu(model=str(g.get("model", "Mock-24G")), vram_mib=int(g["vram_mib"]))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: node.mock_gpus[{i}] needs an integer vram_mib") from None
