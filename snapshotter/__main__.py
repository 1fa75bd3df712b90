"""`python -m snapshotter --nats URL --redis URL --node NAME --state-dir DIR [--shared-dir DIR]`

Runs one node's snapshotter (see snapshotter/service.py). Needs root and CRIU 4.x
(`sudo infra/install-criu.sh`); exits with that hint when CRIU is not usable.
"""

import argparse
import sys
from pathlib import Path

from thaw_core.process import run_until_signalled
from thaw_core.telemetry import setup_logging, setup_tracing

from snapshotter.errors import CriuMissing
from snapshotter.retention import RetentionPolicy
from snapshotter.service import run_snapshotter
from snapshotter.settings import SnapshotterSettings


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m snapshotter", description="Thaw node snapshotter (CRIU)")
    p.add_argument("--nats", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--node", required=True, help="the node name its agent uses")
    p.add_argument("--state-dir", type=Path, required=True, help="local tier, image cache, scratch")
    p.add_argument("--shared-dir", type=Path, help="shared tier: a directory every node mounts")
    p.add_argument("--criu", help="CRIU binary (default: /usr/local/sbin/criu, then PATH)")
    p.add_argument("--keep", type=int, default=3, help="snapshots kept per function")
    p.add_argument("--max-age-s", type=int, default=7 * 24 * 3600, help="older snapshots are deleted "
                   "(the newest is always kept)")
    a = p.parse_args()
    try:
        retention = RetentionPolicy(keep_count=a.keep, max_age_s=a.max_age_s)
    except ValueError as exc:
        p.error(str(exc))
    settings = SnapshotterSettings(node=a.node, nats_url=a.nats, redis_url=a.redis, state_dir=a.state_dir,
                                   shared_dir=a.shared_dir, criu_path=a.criu, retention=retention)
    setup_logging(f"snapshotter-{settings.node}")
    setup_tracing(f"snapshotter-{settings.node}")
    try:
        run_until_signalled(lambda stop: run_snapshotter(settings, stop))
    except CriuMissing as exc:
        sys.exit(f"snapshotter: {exc}")


if __name__ == "__main__":
    main()
