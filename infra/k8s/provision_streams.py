"""Create or update Thaw's JetStream streams as the operator, then exit: the Kubernetes Job's step
that `thaw up` does in-process (services may not create streams: thaw_core/bus_auth.py).

`python infra/k8s/provision_streams.py --nats URL[,URL...] --nats-credentials FILE [--replicas 3] [--timeout-s 300]`

On a NATS cluster, give every server's URL and `--replicas 3`: each stream is kept on three servers.
Until the cluster has elected its JetStream leader (and, for R3, three servers have joined) the
server refuses, and this retries.

Retries while the server is not up yet (the Job starts beside nats-server); exits non-zero,
saying why, when the server refuses the operator or the deadline passes.
"""

import argparse
import asyncio
import sys
import time
from pathlib import Path

import nats.errors

from bus_schemas import permissions
from thaw_core import bus_auth


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="provision_streams.py", description="create Thaw's JetStream streams")
    p.add_argument("--nats", required=True, help="nats://host:port, or a cluster's servers comma-separated")
    p.add_argument("--nats-credentials", type=Path, required=True, help="the operator's bus credentials (JSON)")
    p.add_argument("--replicas", type=int, choices=(1, 3, 5), default=1,
                   help="each stream's copies: 1 on one server, 3 on a cluster")
    p.add_argument("--timeout-s", type=float, default=300.0, help="give up after this long")
    return p


async def provision(url: str, creds: bus_auth.Credentials, timeout_s: float, attempt_s: float = 15.0,
                    replicas: int = 1) -> None:
    """Provision, retrying until `timeout_s` passes. Each attempt is bounded: nats-py keeps
    trying a server that refuses connections instead of raising."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await asyncio.wait_for(bus_auth.provision_streams(url, creds, replicas=replicas), attempt_s)
            return
        except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
            if time.monotonic() + attempt_s > deadline:
                raise TimeoutError(f"no streams provisioned at {url} within {timeout_s:.0f}s (last: {exc!r}); "
                                   "check that nats-server runs and that this is the operator's file") from None
            print(f"provision_streams: {url} not ready ({type(exc).__name__}); retrying", flush=True)
            await asyncio.sleep(2)


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    try:
        creds = bus_auth.read_credentials(a.nats_credentials, permissions.OPERATOR)
        asyncio.run(provision(a.nats, creds, a.timeout_s, replicas=a.replicas))
    except (bus_auth.CredentialsError, TimeoutError) as exc:
        sys.exit(f"provision_streams: {exc}")
    print("provision_streams: streams ready", flush=True)


if __name__ == "__main__":
    main()
