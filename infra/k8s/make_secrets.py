"""Make the credentials Thaw's pods mount, with the project's own code, and print the `kubectl`
commands that load them into Secrets:

    python infra/k8s/make_secrets.py --nodes gpu-1,gpu-2 --dir ./thaw-secrets [-f my-values.yaml] | sh

Give it the values files and `--set`s you give render.py: the namespace, the prefix, the NATS
cluster's members and the Sentinel mode come from them.

Files go to `--dir` (0700, files 0600) through `thaw_core.bus_auth` and `thaw_core.store.acl`,
exactly as `thaw up` makes them: a random password per NATS user (one per platform role, an
agent and a snapshotter user per node) and per Valkey role, each made only where missing, so a
second run with one more node keeps every existing password. From them it writes the
nats-server config (users and permissions; it holds the passwords, so it is a Secret too) and
the Valkey ACL file (password hashes only). A NATS cluster adds a `route` user, the login the
servers' routes use (a route is trusted with every subject: no pod but a member may open one);
Sentinel mode adds Valkey's internal users `replica` and `sentinel` (thaw_core.valkey_sentinel)
and, for the init containers, their passwords as config lines (REPLICATION_CONF,
SENTINEL_AUTH_CONF).

The printed commands name files, never a password: `kubectl create secret generic --from-file`
reads them, piped into `kubectl apply` so that a rerun updates the Secrets in place. Keep
`--dir` as the operator's copy (the operator's credentials there are what `thaw keys` and the
nats CLI need), or delete it once the Secrets are in.
"""

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

import render
import servers as S
from bus_schemas import permissions as P
from thaw_core import bus_auth, valkey_sentinel
from thaw_core.nats_cluster import CLUSTER_NAME
from thaw_core.private_files import replace_private
from thaw_core.store import acl

NATS_CONFIG, VALKEY_ACL = S.NATS_CONFIG_FILE, S.ACL_FILE
ROUTE_USER = "route"  # the NATS cluster's routes log in as it; no platform user has that name


def make_files(secrets_dir: Path, nodes: list[str], cluster_hosts: Sequence[str] = (), sentinel: bool = False) -> None:
    """Every credentials file, the nats-server config and the Valkey files, under `secrets_dir`.
    `cluster_hosts`: the NATS cluster members' host names (none: one server); `sentinel`: the
    Valkey Sentinel setup's users and config lines too. Raises permissions.BadName for a node
    name that cannot be a subject token."""
    bus_auth.write_server_config(secrets_dir / NATS_CONFIG, nats_config_text(secrets_dir, nodes, list(cluster_hosts)))
    roles = acl.ensure_credentials(secrets_dir)
    if not sentinel:
        acl.write_acl_file(secrets_dir / VALKEY_ACL, roles)
        return
    internal = acl.ensure_credentials(secrets_dir, (S.REPLICA_USER, S.SENTINEL_USER))
    replica, watcher = internal[S.REPLICA_USER], internal[S.SENTINEL_USER]
    replace_private(secrets_dir / VALKEY_ACL, valkey_sentinel.acl_text(roles, replica, watcher))
    # every data node carries the replication login: either may be made a replica
    replace_private(secrets_dir / S.REPLICATION_CONF, f"masteruser {replica.user}\nmasterauth {replica.password}\n")
    replace_private(secrets_dir / S.SENTINEL_AUTH_CONF, f"sentinel auth-pass {S.MASTER_NAME} {watcher.password}\n")


def nats_config_text(secrets_dir: Path, nodes: list[str], cluster_hosts: list[str]) -> str:
    """bus_auth's server config (every user, JetStream under the pod's volume), named by the pod
    ($SERVER_NAME), with the monitoring port the probes ask (the nats-io/k8s chart's 8222) and,
    for a cluster, the routes to every member (one's route to itself is dropped by nats-server)."""
    users = P.platform_users(tuple(nodes))
    creds = bus_auth.ensure_credentials(secrets_dir, [u.name for u in users])
    text = bus_auth.server_config_text(users, creds, listen=f"0.0.0.0:{S.NATS_PORT}", store_dir=Path(S.JETSTREAM_DIR))
    text += f"server_name: $SERVER_NAME\nhttp_port: {S.NATS_MONITOR_PORT}\n"
    if not cluster_hosts:
        return text
    route = bus_auth.ensure_credentials(secrets_dir, [ROUTE_USER])[ROUTE_USER]
    routes = [f"nats-route://{route.user}:{route.password}@{h}:{S.NATS_CLUSTER_PORT}" for h in cluster_hosts]
    return text + "\n".join([
        "cluster {", f"  name: {json.dumps(CLUSTER_NAME)}", f"  listen: \"0.0.0.0:{S.NATS_CLUSTER_PORT}\"",
        # clients are given every member's URL (servers.nats_url); pod addresses are not worth telling them
        "  no_advertise: true",
        f"  authorization {{ user: {json.dumps(route.user)}, password: {json.dumps(route.password)} }}",
        f"  routes: {json.dumps(routes)}", "}"]) + "\n"


def secret_files(secrets_dir: Path, nodes: list[str], prefix: str, sentinel: bool = False) -> dict[str, list[Path]]:
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
        names["valkey-acl"]: [secrets_dir / VALKEY_ACL,
                              *((secrets_dir / S.REPLICATION_CONF, secrets_dir / S.SENTINEL_AUTH_CONF) if sentinel else ())],
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
    p.add_argument("-f", "--values", type=Path, action="append", default=[], help="the values files render.py gets")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="the --sets render.py gets")
    a = p.parse_args(argv)
    nodes = [n.strip() for n in a.nodes.split(",") if n.strip()]
    try:
        v = render.load_values(a.values, a.set)
        sentinel = bool(v["valkey"]["sentinel"])
        make_files(a.dir, nodes, S.nats_cluster_hosts(v), sentinel)
    except (OSError, ValueError, yaml.YAMLError, bus_auth.CredentialsError, acl.CredentialsError) as exc:
        sys.exit(f"make_secrets: {exc}")
    print(f"# credentials for {len(nodes)} node(s) in {a.dir} (0700); load them into Secrets:")
    print("\n".join(kubectl_commands(secret_files(a.dir, nodes, v["prefix"], sentinel), v["namespace"])))


if __name__ == "__main__":
    main()
