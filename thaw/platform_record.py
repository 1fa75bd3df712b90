"""`<state dir>/run/platform.json`: what a node joining a running platform needs to know of it
(thaw/join.py): its NATS and Redis URLs, its nodes, how its NATS servers are configured, and
its shared snapshot tier. No secret: credentials stay in `secrets/`, 0600."""

import json
from pathlib import Path

from thaw_core.private_files import replace_private

RECORD = Path("run") / "platform.json"


def write_record(state_dir: Path, nats: str, redis: str, nodes: list[str], bus: dict) -> None:
    """`bus`: {"kind": "single", "listen", "store_dir"} or {"kind": "cluster", "members": [...]}."""
    record = {"nats": nats, "redis": redis, "nodes": nodes, "bus": bus,
              "shared_dir": str(state_dir / "snapshots-shared")}
    (state_dir / RECORD).parent.mkdir(parents=True, exist_ok=True)
    replace_private(state_dir / RECORD, json.dumps(record, indent=1))
