"""`thaw up --join PLATFORM_DIR`: one more node for a platform `thaw up` runs on this machine
(thaw/join.py). It gets bus users of its own on the running NATS, takes pods, and hands them
back when stopped."""

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from agents.identity import default_node_name
from thaw.launcher import clear_node_leftovers

from tests.platform.test_thaw_up import ThawUp, wait_for

BIG = {"name": "big", "command": ["{python}", str(Path(__file__).resolve().parents[2] / "examples/echo/worker.py")],
       "health_path": "/healthz", "resources": {"vram_mib": 24576, "gpu_count": 1, "cpu_milli": 200, "memory_mib": 128},
       "scaling": {"min_pods": 3, "max_pods": 3, "idle_timeout_s": 120, "start_timeout_s": 30}, "snapshot": False}


def api(up: ThawUp, method: str, path: str, body: dict | None = None) -> dict:
    key = (up.state / "credentials").read_text().strip()
    req = urllib.request.Request(f"http://127.0.0.1:{up.port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def nodes_of_big(up: ThawUp) -> list[str]:
    return sorted(p["node"] for p in api(up, "GET", "/v1/pods")["pods"] if p["fn"] == "big")


def three_placed(up: ThawUp, node: str) -> list[str] | None:
    placed = nodes_of_big(up)
    return placed if len(placed) == 3 and node in placed else None


def test_a_joined_node_takes_pods_and_hands_them_back_when_stopped(tmp_path):
    up = ThawUp(tmp_path / "platform")
    node_dir = tmp_path / "node2"
    joined = None
    try:
        up.wait_up()
        joined = subprocess.Popen([str(Path(sys.executable).parent / "thaw"), "--state-dir", str(node_dir), "up",
                                   "--join", str(up.state)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        lines = []
        for line in joined.stdout:
            lines.append(line)
            if "joined: placement sees its capacity" in line:
                break
        assert "joined" in lines[-1], "".join(lines)
        node = default_node_name(node_dir / "agent")

        api(up, "POST", "/v1/functions", BIG)  # 3 whole GPUs: the platform's own node has 2
        placed = wait_for(lambda: three_placed(up, node), 60, "three pods of big, one on the joined node")
        assert placed.count(node) >= 1 and placed.count(up.node) >= 1

        os.killpg(joined.pid, signal.SIGINT)
        out, _ = joined.communicate(timeout=40)
        assert f"node {node} stopped" in out, out
        wait_for(lambda: node not in nodes_of_big(up), 30, "the joined node's pods gone from it")
        assert [n["name"] for n in api(up, "GET", "/v1/nodes")["nodes"] if n["name"] == node] in ([], [node])
    finally:
        if joined is not None and joined.poll() is None:
            os.killpg(joined.pid, signal.SIGKILL)
            joined.wait()
        up.clean_up()
        clear_node_leftovers([default_node_name(node_dir / "agent")])  # a no-op after a clean stop
