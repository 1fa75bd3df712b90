"""Who this agent is on its host: a node name unique per host and state dir, and a token that
marks the workers it starts.

Two platforms on one host used to share the default node name "node-a", and an agent that
restarted killed every process whose environment named its node, the other platform's workers
included. Now the default name is `<host>-<6 hex of the state dir's path>`, and every worker
carries `THAW_AGENT=<token>` (the token lives in the agent's state dir, 0600; a function cannot
set `THAW_*` variables): reconciliation touches only processes that carry this agent's token.
"""

import hashlib
import re
import secrets
import socket
from pathlib import Path

from thaw_core.private_files import publish_once

TOKEN_ENV = "THAW_AGENT"
_TOKEN_FILE = "agent-token"


def default_node_name(state_dir: Path, hostname: str | None = None) -> str:
    """Stable for one state dir on one host; different for another state dir or host. Only
    lowercase letters, digits and '-', so it fits a NATS subject token."""
    host = (hostname or socket.gethostname()).split(".")[0].lower()
    host = re.sub(r"[^a-z0-9-]+", "-", host).strip("-")[:40] or "host"
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:6]
    return f"{host}-{digest}"


def agent_token(state_dir: Path) -> str:
    """This agent's token, made at its first start and kept in its state dir (0600). Two agents
    starting at once on one state dir agree on one (the file is linked into place)."""
    path = state_dir / _TOKEN_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        publish_once(path, secrets.token_hex(16))
    return path.read_text().strip()
