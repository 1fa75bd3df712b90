"""`python -m agents --nats URL --redis URL --state-dir DIR [--config FILE] [--node NAME]
[--expect-snapshotter]`"""

import argparse
import dataclasses
from pathlib import Path

from thaw_core.process import run_until_signalled
from thaw_core.telemetry import setup_logging, setup_tracing

from agents.config import load_agent_settings
from agents.service import run_agent


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m agents", description="Thaw node agent")
    p.add_argument("--nats", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--nats-credentials", type=Path, help="this service's bus credentials (JSON; thaw up "
                   "writes one per user, 0600, under <state dir>/secrets)")
    p.add_argument("--redis-credentials", type=Path, help="this service's store credentials (JSON; thaw up "
                   "writes one per role, 0600, under <state dir>/secrets)")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--config", type=Path)
    p.add_argument("--node")
    p.add_argument("--expect-snapshotter", action="store_true",
                   help="a snapshotter runs beside this agent: the node is degraded while it does not answer")
    a = p.parse_args()
    settings = load_agent_settings(a.config, a.nats, a.redis, a.state_dir, a.node)
    if a.expect_snapshotter:
        settings = dataclasses.replace(settings, expect_snapshotter=True)
    if a.redis_credentials or a.nats_credentials:
        settings = dataclasses.replace(settings, redis_creds=a.redis_credentials, nats_creds=a.nats_credentials)
    setup_logging(f"agent-{settings.node}")
    setup_tracing(f"agent-{settings.node}")
    # Its workers get stop_grace_s to end; the agent's own clean-up a little more.
    run_until_signalled(lambda stop: run_agent(settings, stop), grace_s=settings.stop_grace_s + 5)


if __name__ == "__main__":
    main()
