"""Render Thaw's Kubernetes manifests from values: `python infra/k8s/render.py [-f VALUES]... [--set K=V]...`

Prints one multi-document YAML for `kubectl apply -f -`. Not Helm: no helm binary ships as a
Python wheel, so the manifests are built here as plain dicts from `values.yaml` (the defaults)
merged with the operator's files, and dumped with PyYAML; infra/k8s/README.md says how to install.

What it makes (names start with `prefix`, default `thaw`):
- gateway: Deployment + Service (HTTP), placement: Deployment, both unprivileged;
- node: a DaemonSet on GPU nodes, one pod with two containers, `agent` and `snapshotter`,
  privileged (the only ones; why is said at `node_daemonset`);
- nats and valkey (servers.py): one JetStream server or a cluster (`nats.replicas`), one Valkey
  or a primary, a replica and three Sentinels (`valkey.sentinel`);
- provision-streams: a Job that creates the JetStream streams as the operator (no service may).
The Secrets themselves are not rendered: `make_secrets.py` makes them with the project's code.
"""

import argparse
import copy
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from common import Doc, labels, meta, name, pod_spec, restricted_container, restricted_pod, secret_names, workload
from servers import NATS_CLUSTER_PORT, NATS_MONITOR_PORT, NATS_PORT, VALKEY_PORT  # noqa: F401  (make_secrets, tests)
from servers import nats, nats_url, redis_url, stream_replicas, valkey

HERE = Path(__file__).resolve().parent
DEFAULT_VALUES = HERE / "values.yaml"
CREDENTIALS_DIR = "/etc/thaw/credentials"  # where each pod finds its own credentials files
STATE_DIR = "/var/lib/thaw"  # the node's state dir inside the node pod (a hostPath)
SHARED_DIR = "/var/lib/thaw-shared"
NODE_CONFIG = "/etc/thaw/node/node.toml"
APP_UID = 10001  # the image's unprivileged user (infra/docker/Dockerfile)


def load_values(files: Iterable[Path] = (), sets: Iterable[str] = ()) -> Doc:
    """The defaults, then each file merged over them, then each `a.b.c=value` (value as YAML)."""
    values = yaml.safe_load(DEFAULT_VALUES.read_text())
    for f in files:
        values = merged(values, yaml.safe_load(Path(f).read_text()) or {})
    for item in sets:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--set {item!r}: write it as path.to.key=value")
        *parents, last = path.split(".")
        patch: Doc = {last: yaml.safe_load(raw)}
        for key in reversed(parents):
            patch = {key: patch}
        values = merged(values, patch)
    return values


def merged(base: Doc, over: Doc) -> Doc:
    """`over` on top of `base`: maps merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(values: Doc) -> list[Doc]:
    """Every manifest, in apply order (namespace first, servers before the services using them)."""
    docs = [namespace(values)] if values["createNamespace"] else []
    docs += [*nats(values), *valkey(values), provision_job(values), *gateway(values), placement(values),
             node_config(values), node_daemonset(values)]
    return docs


class _Dumper(yaml.SafeDumper):
    """Writes a value shared by two objects out twice: no `&id001` anchors for a reader to chase."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _literal_if_multiline(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # a config file or script in a ConfigMap reads as the file itself (`|`), not one quoted line
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _literal_if_multiline)


def to_yaml(docs: list[Doc]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


# -- shared pieces -------------------------------------------------------------------------------

def image(v: Doc) -> str:
    return f"{v['image']['repository']}:{v['image']['tag']}"


def credentials_volume(v: Doc, role: str) -> Doc:
    # 0440 with the pod's fsGroup: readable by the service's group, by nobody else in the pod.
    return {"name": "credentials", "secret": {"secretName": secret_names(v["prefix"])[role], "defaultMode": 0o440}}


def credentials_mount() -> Doc:
    return {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}


def service_args(v: Doc, nats_file: str, redis_file: str | None) -> list[str]:
    args = ["--nats", nats_url(v), "--redis", redis_url(v), "--nats-credentials", f"{CREDENTIALS_DIR}/{nats_file}"]
    return args + (["--redis-credentials", f"{CREDENTIALS_DIR}/{redis_file}"] if redis_file else [])


def tmp_volume() -> Doc:
    return {"name": "tmp", "emptyDir": {}}


def tmp_mount() -> Doc:
    return {"name": "tmp", "mountPath": "/tmp"}


# -- the platform's services ---------------------------------------------------------------------

def namespace(v: Doc) -> Doc:
    # The node pods are privileged: Pod Security admission must allow that in this namespace.
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": v["namespace"], "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}


def gateway(v: Doc) -> list[Doc]:
    g = v["gateway"]
    args = [*service_args(v, "nats-gateway.json", "gateway.json"), "--host", "0.0.0.0", "--port", str(g["port"]),
            "--lease-ttl", str(g["leaseTtlS"]), "--async-in-flight", str(g["asyncInFlight"])]
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}
    container = {"name": "gateway", "image": image(v), "imagePullPolicy": v["image"]["pullPolicy"],
                 "command": ["python", "-m", "gateway"], "args": args,
                 "ports": [{"name": "http", "containerPort": g["port"]}],
                 "readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 6},
                 "resources": g["resources"], "securityContext": restricted_container(),
                 "volumeMounts": [credentials_mount(), tmp_mount()]}
    deployment = workload(v, "Deployment", "gateway", {"replicas": g["replicas"]}, pod_spec(
        v, [container], [credentials_volume(v, "gateway"), tmp_volume()], securityContext=restricted_pod(APP_UID)))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta(v, "gateway"),
               "spec": {"type": g["service"]["type"], "selector": labels(v, "gateway"),
                        "ports": [{"name": "http", "port": g["service"]["port"], "targetPort": "http"}]}}
    return [deployment, service]


def placement(v: Doc) -> Doc:
    p = v["placement"]
    container = {"name": "placement", "image": image(v), "imagePullPolicy": v["image"]["pullPolicy"],
                 "command": ["python", "-m", "placement"],
                 # each worker its own name: it names the worker's own capacity consumer, so every
                 # replica's index hears every node (placement/README.md)
                 "args": [*service_args(v, "nats-placement.json", "placement.json"),
                          "--node-timeout", str(p["nodeTimeoutS"]), "--name", "$(POD_NAME)"],
                 "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "resources": p["resources"], "securityContext": restricted_container(),
                 "volumeMounts": [credentials_mount(), tmp_mount()]}
    return workload(v, "Deployment", "placement", {"replicas": p["replicas"]}, pod_spec(
        v, [container], [credentials_volume(v, "placement"), tmp_volume()], securityContext=restricted_pod(APP_UID)))


def node_config(v: Doc) -> Doc:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(v, "node"),
            "data": {"node.toml": v["node"]["config"]}}


def node_daemonset(v: Doc) -> Doc:
    """One pod per GPU node: the agent and (with `snapshots`) the snapshotter.

    Privileged, and only these two containers are:
    - the snapshotter runs CRIU, which dumps and restores whole process trees: it needs
      CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE and more, writes /proc/sys and
      ns_last_pid, and must not be confined by the runtime's seccomp or AppArmor profile; CRIU
      documents no smaller set that works across kernels, so the container is privileged;
    - the agent builds each worker's sandbox (thaw_core/sandbox): user, PID, mount and network
      namespaces, a veth on the node's bridge (`ip`, `nsenter`) and a cgroup with the
      function's limits: CAP_SYS_ADMIN and CAP_NET_ADMIN on the host's network and cgroups.
    hostPID: a worker's pid is recorded in the state dir and must mean the same process after
    this pod is replaced (agents/reconcile.py adopts live workers, snapshotter/orphans.py stops
    the unowned), and the snapshotter dumps the pid the agent names.
    hostNetwork: worker veths hang on a bridge of the node, so a worker has an address on the
    node, not inside this pod's network namespace.
    """
    n = v["node"]
    node_env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}]
    state = {"name": "state", "mountPath": STATE_DIR}
    common = {"image": image(v), "imagePullPolicy": v["image"]["pullPolicy"], "env": node_env,
              "securityContext": {"privileged": True, "runAsUser": 0}}  # the image's user is not root
    agent_args = [*service_args(v, "nats-agent-$(NODE_NAME).json", "agent.json"),
                  "--state-dir", f"{STATE_DIR}/agent", "--config", NODE_CONFIG, "--node", "$(NODE_NAME)"]
    agent_resources = copy.deepcopy(n["agent"]["resources"])
    if n["gpuResource"]:
        agent_resources.setdefault("limits", {})["nvidia.com/gpu"] = n["gpuResource"]
    agent = {"name": "agent", **common, "command": ["python", "-m", "agents"],
             "args": agent_args + (["--expect-snapshotter"] if n["snapshots"] else []),
             "resources": agent_resources,
             "volumeMounts": [credentials_mount(), state, {"name": "config", "mountPath": str(Path(NODE_CONFIG).parent),
                                                           "readOnly": True}]}
    containers, volumes = [agent], [
        {"name": "credentials", "secret": {"secretName": secret_names(v["prefix"])["agent"], "defaultMode": 0o400}},
        {"name": "state", "hostPath": {"path": n["stateDir"], "type": "DirectoryOrCreate"}},
        {"name": "config", "configMap": {"name": name(v, "node")}}]
    if n["snapshots"]:
        containers.append(snapshotter_container(v, common, state))
        volumes += [{"name": "snapshotter-credentials",
                     "secret": {"secretName": secret_names(v["prefix"])["snapshotter"], "defaultMode": 0o400}},
                    # CRIU caches its kernel probing on a tmpfs (infra/install-criu.sh builds it to use /run/criu)
                    {"name": "criu-kdat", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}}]
        if n["sharedDir"]:
            volumes.append({"name": "shared", "hostPath": {"path": n["sharedDir"], "type": "Directory"}})
    extra: Doc = {"hostPID": True, "hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet",
                  "nodeSelector": n["nodeSelector"], "tolerations": n["tolerations"],
                  # the agent stops its workers on SIGTERM, each within stop_grace_s (10 s)
                  "terminationGracePeriodSeconds": 30}
    if n["runtimeClassName"]:
        extra["runtimeClassName"] = n["runtimeClassName"]
    return workload(v, "DaemonSet", "node", {"updateStrategy": {"type": "RollingUpdate"}},
                    pod_spec(v, containers, volumes, **extra))


def snapshotter_container(v: Doc, common: Doc, state: Doc) -> Doc:
    n = v["node"]
    args = [*service_args(v, "nats-snapshotter-$(NODE_NAME).json", "snapshotter.json"),
            "--node", "$(NODE_NAME)", "--state-dir", f"{STATE_DIR}/snapshotter",
            "--keep", str(n["keepSnapshots"]), "--max-age-s", str(n["maxSnapshotAgeS"])]
    mounts = [{"name": "snapshotter-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}, state,
              {"name": "criu-kdat", "mountPath": "/run/criu"}]
    if n["sharedDir"]:
        args += ["--shared-dir", SHARED_DIR]
        mounts.append({"name": "shared", "mountPath": SHARED_DIR})
    return {"name": "snapshotter", **common, "command": ["python", "-m", "snapshotter"], "args": args,
            "resources": n["snapshotter"]["resources"], "volumeMounts": mounts}


def provision_job(v: Doc) -> Doc:
    container = {"name": "provision-streams", "image": image(v), "imagePullPolicy": v["image"]["pullPolicy"],
                 "command": ["python", "/opt/thaw/infra/k8s/provision_streams.py"],
                 "args": ["--nats", nats_url(v), "--nats-credentials", f"{CREDENTIALS_DIR}/nats-operator.json",
                          "--replicas", str(stream_replicas(v))],
                 "resources": v["provision"]["resources"], "securityContext": restricted_container(),
                 "volumeMounts": [credentials_mount(), tmp_mount()]}
    spec = pod_spec(v, [container], [credentials_volume(v, "operator"), tmp_volume()],
                    restartPolicy="OnFailure", securityContext=restricted_pod(APP_UID))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(v, "provision-streams"),
            "spec": {"backoffLimit": 10, "ttlSecondsAfterFinished": 600,
                     "template": {"metadata": {"labels": labels(v, "provision-streams")}, "spec": spec}}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python infra/k8s/render.py", description=__doc__.splitlines()[0])
    p.add_argument("-f", "--values", type=Path, action="append", default=[], help="values file over the defaults")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="one value, e.g. gateway.replicas=3")
    a = p.parse_args(argv)
    try:
        docs = render(load_values(a.values, a.set))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        p.error(str(exc))
    sys.stdout.write(to_yaml(docs))


if __name__ == "__main__":
    main()
