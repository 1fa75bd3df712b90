"""Make the credentials Thaw's pods mount, with the project's own code, and print the `kubectl`
commands that load them into Secrets:

    python infra/k8s/make_secrets.py --nodes gpu-1,gpu-2 --dir ./thaw-secrets | sh

Files go to `--dir` (0700, files 0600) through `thaw_core.bus_auth` and `thaw_core.store.acl`,
exactly as `thaw up` makes them: a random password per NATS user (one per platform role, an
agent and a snapshotter user per node) and per Valkey role, each made only where missing, so a
second run with one more node keeps every existing password. From them it writes the
nats-server config (users and permissions; it holds the passwords, so it is a Secret too) and
the Valkey ACL file (password hashes only).

The printed commands name files, never a password: `kubectl create secret generic --from-file`
reads them, piped into `kubectl apply` so that a rerun updates the Secrets in place. Keep
`--dir` as the operator's copy (the operator's credentials there are what `thaw keys` and the
nats CLI need), or delete it once the Secrets are in.
"""

import argparse
import shlex
import sys
from pathlib import Path

import render

from bus_schemas import permissions as P
from thaw_core import bus_auth
from thaw_core.store import acl

NATS_CONFIG, VALKEY_ACL = "nats-server.conf", "users.acl"
JETSTREAM_DIR = "/data/jetstream"  # on the nats pod's volume (render.nats)


def make_files(secrets_dir: Path, nodes: list[str]) -> None:
    """Every credentials file, the nats-server config and the ACL file, under `secrets_dir`.
    Raises permissions.BadName for a node name that cannot be a subject token."""
    users = P.platform_users(tuple(nodes))
    creds = bus_auth.ensure_credentials(secrets_dir, [u.name for u in users])
    text = bus_auth.server_config_text(users, creds, listen=f"0.0.0.0:{render.NATS_PORT}",
                                       store_dir=Path(JETSTREAM_DIR))
    # the monitoring port the probes ask (nats-io/k8s convention: 8222)
    bus_auth.write_server_config(secrets_dir / NATS_CONFIG, text + f"http_port: {render.NATS_MONITOR_PORT}\n")
    acl.write_acl_file(secrets_dir / VALKEY_ACL, acl.ensure_credentials(secrets_dir))


def secret_files(secrets_dir: Path, nodes: list[str], prefix: str) -> dict[str, list[Path]]:
    """Each Secret's name and the files it holds (a file's name is its key, its name in the pod).
    Each pod gets only its own role's: the gateway's two bus users, placement's, the operator's
    for the streams Job; the node pod's agent and snapshotter containers mount a Secret each
    that holds that role's user for every node (a DaemonSet cannot mount one Secret per node),
    and pick their node's file by name."""
    names = render.secret_names(prefix)
    bus = lambda role, node="": bus_auth.credentials_path(secrets_dir, P.user_name(role, node))  # noqa: E731
    store = lambda role: acl.credentials_path(secrets_dir, role)  # noqa: E731
    return {
        names["nats-config"]: [secrets_dir / NATS_CONFIG],
        names["valkey-acl"]: [secrets_dir / VALKEY_ACL],
        names["gateway"]: [bus(P.GATEWAY), bus(P.GATEWAY_STREAM), store(acl.GATEWAY)],
        names["placement"]: [bus(P.PLACEMENT), store(acl.PLACEMENT)],
        names["operator"]: [bus(P.OPERATOR), store(acl.OPERATOR)],
        names["agent"]: [store(acl.AGENT), *(bus(P.AGENT, n) for n in nodes)],
        names["snapshotter"]: [store(acl.SNAPSHOTTER), *(bus(P.SNAPSHOTTER, n) for n in nodes)],
    }


def kubectl_commands(files: dict[str, list[Path]], namespace: str) -> list[str]:
    """One idempotent create-or-update per Secret; the commands hold paths, never contents."""
    out = []
    for secret, paths in files.items():
        sources = " ".join(shlex.quote(f"--from-file={p.name}={p}") for p in paths)
        out.append(f"kubectl -n {shlex.quote(namespace)} create secret generic {shlex.quote(secret)} {sources} "
                   f"--dry-run=client -o yaml | kubectl apply -f -")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python infra/k8s/make_secrets.py", description=__doc__.splitlines()[0])
    p.add_argument("--nodes", required=True, help="the GPU nodes' Kubernetes names, comma-separated (each node's "
                   "agent and snapshotter get a bus user of their own)")
    p.add_argument("--dir", type=Path, default=Path("thaw-secrets"), help="where the files are made and kept")
    p.add_argument("--namespace", default="thaw")
    p.add_argument("--prefix", default="thaw", help="the manifests' name prefix (values: prefix)")
    a = p.parse_args(argv)
    nodes = [n.strip() for n in a.nodes.split(",") if n.strip()]
    try:
        make_files(a.dir, nodes)
    except (P.BadName, bus_auth.CredentialsError, acl.CredentialsError) as exc:
        sys.exit(f"make_secrets: {exc}")
    print(f"# credentials for {len(nodes)} node(s) in {a.dir} (0700); load them into Secrets:")
    print("\n".join(kubectl_commands(secret_files(a.dir, nodes, a.prefix), a.namespace)))


if __name__ == "__main__":
    main()
