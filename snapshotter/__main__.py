"""`python -m snapshotter --nats URL --redis URL --node NAME --state-dir DIR [--shared-dir DIR]
[--runtime container --podman-socket PATH --standby N]`

Runs one node's snapshotter (see snapshotter/service.py). Needs root and CRIU 4.x
(`sudo infra/install-criu.sh`), and podman for `--runtime container`
(`sudo infra/install-podman.sh`); exits with that hint when either is not usable.
"""

import argparse
import sys
from pathlib import Path

from thaw_core.process import run_until_signalled
from thaw_core.telemetry import setup_logging, setup_tracing

from thaw_core.podman.service import PodmanUnavailable

from snapshotter.errors import CriuMissing
from snapshotter.retention import RetentionPolicy
from snapshotter.service import run_snapshotter
from snapshotter.settings import SnapshotterSettings


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m snapshotter", description="Thaw node snapshotter (CRIU)")
    p.add_argument("--nats", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--nats-credentials", type=Path, help="this service's bus credentials (JSON; thaw up "
                   "writes one per user, 0600, under <state dir>/secrets)")
    p.add_argument("--redis-credentials", type=Path, help="this service's store credentials (JSON; thaw up "
                   "writes one per role, 0600, under <state dir>/secrets)")
    p.add_argument("--node", required=True, help="the node name its agent uses")
    p.add_argument("--state-dir", type=Path, required=True, help="local tier, image cache, scratch")
    p.add_argument("--shared-dir", type=Path, help="shared tier: a directory every node mounts")
    p.add_argument("--criu", help="CRIU binary (default: /usr/local/sbin/criu, then PATH)")
    p.add_argument("--keep", type=int, default=3, help="snapshots kept per function")
    p.add_argument("--max-age-s", type=int, default=7 * 24 * 3600, help="older snapshots are deleted "
                   "(the newest is always kept)")
    p.add_argument("--runtime", choices=("process", "container"), default="process",
                   help="the runtime of this node's agent (what its workers are)")
    p.add_argument("--podman-socket", type=Path, default=Path("/run/thaw/podman.sock"),
                   help="podman API socket (container runtime; the agent's container_socket)")
    p.add_argument("--standby", type=int, default=1, help="staged containers kept per container "
                   "snapshot, so a restore skips podman's import (0: always import)")
    p.add_argument("--pod-cidr", default="", help="the node's pod subnet, as given to its agent "
                   "(default: derived from the node name, as the agent does)")
    p.add_argument("--max-restores", type=int, default=0, help="CRIU restores at once (default: one per core)")
    p.add_argument("--cuda-checkpoint", help="NVIDIA's cuda-checkpoint binary (default: PATH); used with "
                   "driver 550+ to dump a GPU worker's device memory")
    a = p.parse_args()
    try:
        retention = RetentionPolicy(keep_count=a.keep, max_age_s=a.max_age_s)
    except ValueError as exc:
        p.error(str(exc))
    settings = SnapshotterSettings(node=a.node, nats_url=a.nats, redis_url=a.redis, redis_creds=a.redis_credentials,
                                   pod_cidr=a.pod_cidr, max_restores=a.max_restores, nats_creds=a.nats_credentials, state_dir=a.state_dir,
                                   shared_dir=a.shared_dir, criu_path=a.criu, retention=retention,
                                   runtime=a.runtime, podman_socket=a.podman_socket,
                                   standby_per_snapshot=a.standby, cuda_checkpoint_path=a.cuda_checkpoint)
    setup_logging(f"snapshotter-{settings.node}")
    setup_tracing(f"snapshotter-{settings.node}")
    try:
        run_until_signalled(lambda stop: run_snapshotter(settings, stop))
    except (CriuMissing, PodmanUnavailable) as exc:
        sys.exit(f"snapshotter: {exc}")


if __name__ == "__main__":
    main()
