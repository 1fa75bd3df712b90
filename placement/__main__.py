"""`python -m placement --nats URL --redis URL`"""

import argparse
from pathlib import Path

from thaw_core.process import run_until_signalled, tune_gc_for_throughput
from thaw_core.telemetry import setup_logging, setup_tracing

from placement.service import run_placement
from placement.settings import PlacementSettings


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m placement", description="Thaw placement worker")
    p.add_argument("--nats", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--nats-credentials", type=Path, help="this service's bus credentials (JSON; thaw up "
                   "writes one per user, 0600, under <state dir>/secrets)")
    p.add_argument("--redis-credentials", type=Path, help="this service's store credentials (JSON; thaw up "
                   "writes one per role, 0600, under <state dir>/secrets)")
    p.add_argument("--name", default="placement")
    p.add_argument("--node-timeout", type=float, default=10.0)
    a = p.parse_args()
    setup_logging(a.name)
    setup_tracing(a.name)
    tune_gc_for_throughput()
    settings = PlacementSettings(nats_url=a.nats, redis_url=a.redis, redis_creds=a.redis_credentials,
                                 nats_creds=a.nats_credentials, name=a.name, node_timeout_s=a.node_timeout)
    run_until_signalled(lambda stop: run_placement(settings, stop))


if __name__ == "__main__":
    main()
