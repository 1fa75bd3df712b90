"""`python -m gateway --nats URL --redis URL [--port N]`"""

import argparse
from pathlib import Path

from thaw_core.process import run_until_signalled, tune_gc_for_throughput
from thaw_core.telemetry import setup_logging, setup_tracing

from gateway.service import run_gateway
from gateway.settings import GatewaySettings


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m gateway", description="Thaw gateway: HTTP bridge and infer.request responder")
    p.add_argument("--nats", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--nats-credentials", type=Path, help="this service's bus credentials (JSON; thaw up "
                   "writes one per user, 0600, under <state dir>/secrets)")
    p.add_argument("--redis-credentials", type=Path, help="this service's store credentials (JSON; thaw up "
                   "writes one per role, 0600, under <state dir>/secrets)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--lease-ttl", type=float, default=6.0)
    p.add_argument("--lease-hold", type=float, default=1.0)
    p.add_argument("--async-in-flight", type=int, default=64, help="async calls this gateway runs at once")
    a = p.parse_args()
    setup_logging("gateway")
    setup_tracing("gateway")
    settings = GatewaySettings(nats_url=a.nats, redis_url=a.redis, redis_creds=a.redis_credentials,
                               nats_creds=a.nats_credentials, host=a.host, port=a.port,
                               lease_ttl_s=a.lease_ttl, lease_hold_s=a.lease_hold,
                               async_in_flight=a.async_in_flight)
    tune_gc_for_throughput()
    run_until_signalled(lambda stop: run_gateway(settings, stop))


if __name__ == "__main__":
    main()
