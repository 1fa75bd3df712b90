"""An agent's identity: a node name unique per host and state dir, and a token kept in its
state dir that marks the workers it starts."""

import stat
from pathlib import Path

from agents.identity import agent_token, default_node_name


def test_the_default_node_name_is_stable_per_state_dir_and_differs_between_them(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert default_node_name(a, "gpu-host.example.org") == default_node_name(a, "gpu-host.example.org")
    assert default_node_name(a, "gpu-host") != default_node_name(b, "gpu-host")
    assert default_node_name(a, "gpu-host") != default_node_name(a, "other-host")
    assert default_node_name(a, "gpu-host.example.org").startswith("gpu-host-")


def test_the_default_node_name_fits_a_subject_token_whatever_the_hostname():
    for host in ("My_Host.local", "...", "UPPER case", "x" * 80):
        name = default_node_name(Path("/var/lib/thaw"), host)
        assert name.replace("-", "").isalnum() and name == name.lower() and "." not in name and len(name) <= 47


def test_the_token_is_made_once_kept_0600_and_given_back_on_restart(tmp_path):
    first = agent_token(tmp_path / "agent")
    assert len(first) == 32 and agent_token(tmp_path / "agent") == first
    assert stat.S_IMODE((tmp_path / "agent" / "agent-token").stat().st_mode) == 0o600
    assert agent_token(tmp_path / "other") != first
    assert [p.name for p in (tmp_path / "agent").iterdir()] == ["agent-token"], "no temporary file left"
