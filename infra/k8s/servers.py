"""The bus and the store: NATS (one server, or a cluster of `nats.replicas`) and Valkey (one
server, or with `valkey.sentinel` a primary, a replica and three Sentinels), and the URLs the
platform's services are given for them.

Their layout follows the project's own HA setups (thaw_core/nats_cluster.py,
thaw_core/valkey_sentinel.py): cluster name "thaw", master name "thaw", quorum 2, the internal
Valkey users `replica` and `sentinel`. This module does not import them, so that rendering needs
only PyYAML; tests/contract/test_kubernetes.py checks that the names agree.
"""

from common import (Doc, claim, headless_domain, headless_service, meta, name, pod_dns_names, pod_spec,
                    restricted_container, restricted_pod, secret_names, service, spread_over_nodes, workload)

NATS_PORT, NATS_CLUSTER_PORT, NATS_MONITOR_PORT = 4222, 6222, 8222
VALKEY_PORT, SENTINEL_PORT = 6379, 26379
NATS_CONFIG_DIR, NATS_CONFIG_FILE = "/etc/nats-config", "nats-server.conf"
JETSTREAM_DIR = "/data/jetstream"  # on each nats pod's volume
NATS_UID, VALKEY_UID = 1000, 999  # the official images' users
CLUSTER_REPLICAS = 3  # a replicated stream's copies on a cluster (StreamSpec.replicas)

MASTER_NAME, QUORUM = "thaw", 2  # thaw_core.valkey_sentinel
REPLICA_USER, SENTINEL_USER = "replica", "sentinel"
# Files make_secrets.py adds to the valkey-acl Secret in Sentinel mode: config lines holding a
# password, appended by the init containers to the config they write (no shell parses JSON).
REPLICATION_CONF, SENTINEL_AUTH_CONF, ACL_FILE = "valkey-replication.conf", "sentinel-auth.conf", "users.acl"
# Kubernetes timing, not a laptop's (valkey_sentinel's 1 s): a pod's brief stall is no failover.
DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS = 5000, 60000
TEMPLATE_DIR, CONF_DIR, SECRET_DIR = "/etc/valkey-template", "/conf", "/etc/valkey"


# -- what the services are given -----------------------------------------------------------------

def nats_replicas(v: Doc) -> int:
    """1 (one server, streams R1) or an odd number from 3 (a cluster, streams R3): JetStream
    needs a majority of its servers, which an even count adds nothing to."""
    n = v["nats"]["replicas"]
    if not isinstance(n, int) or not (n == 1 or (n >= 3 and n % 2 == 1)):
        raise ValueError(f"nats.replicas: {n!r}; use 1, or an odd number from 3")
    return n


def nats_cluster_hosts(v: Doc) -> list[str]:
    """Every cluster member's stable DNS name; empty for a single server."""
    n = nats_replicas(v)
    return pod_dns_names(v, "nats", n) if n > 1 else []


def stream_replicas(v: Doc) -> int:
    return CLUSTER_REPLICAS if nats_cluster_hosts(v) else 1


def nats_url(v: Doc) -> str:
    """A cluster's every server, comma-separated (the client tries them in turn and moves on
    when one dies, without waiting for kube-proxy to drop a dead endpoint); else the Service."""
    hosts = nats_cluster_hosts(v)
    if hosts:
        return ",".join(f"nats://{h}:{NATS_PORT}" for h in hosts)
    return f"nats://{name(v, 'nats')}.{v['namespace']}.svc:{NATS_PORT}"


def sentinel_hosts(v: Doc) -> list[str]:
    return pod_dns_names(v, "valkey-sentinel", 3)


def redis_url(v: Doc) -> str:
    """With Sentinel, the three Sentinels and the master name (thaw_core.store.client
    connect_via_sentinel); else the one server's Service."""
    if v["valkey"]["sentinel"]:
        hosts = ",".join(f"{h}:{SENTINEL_PORT}" for h in sentinel_hosts(v))
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"
    return f"redis://{name(v, 'valkey')}.{v['namespace']}.svc:{VALKEY_PORT}"


# -- NATS ----------------------------------------------------------------------------------------

def nats(v: Doc) -> list[Doc]:
    """nats-server with JetStream, named and probed as the nats-io/k8s chart does (container
    `nats`, ports nats/cluster/monitor, headless Service for the StatefulSet, client Service,
    /healthz with `js-enabled-only`). Its config is make_secrets.py's, kept whole in a Secret
    because it holds every user's password (and the routes' login); it names each server by
    $SERVER_NAME, the pod's name. A cluster's pods start in parallel: the first cannot become
    ready before a majority is up to elect a JetStream leader."""
    c, hosts = v["nats"], nats_cluster_hosts(v)
    ports = [{"name": "nats", "containerPort": NATS_PORT}, {"name": "cluster", "containerPort": NATS_CLUSTER_PORT},
             {"name": "monitor", "containerPort": NATS_MONITOR_PORT}]
    health = {"httpGet": {"path": "/healthz?js-enabled-only=true", "port": "monitor"}, "periodSeconds": 10}
    container = {"name": "nats", "image": c["image"], "command": ["nats-server"],
                 "args": ["--config", f"{NATS_CONFIG_DIR}/{NATS_CONFIG_FILE}"],
                 "env": [{"name": "SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "ports": ports, "resources": c["resources"], "securityContext": restricted_container(),
                 "startupProbe": {"httpGet": {"path": "/healthz", "port": "monitor"}, "periodSeconds": 5,
                                  "failureThreshold": 60},
                 "readinessProbe": health, "livenessProbe": {**health, "failureThreshold": 6},
                 "volumeMounts": [{"name": "config", "mountPath": NATS_CONFIG_DIR, "readOnly": True},
                                  {"name": "data", "mountPath": "/data"}]}
    extra: Doc = {"affinity": spread_over_nodes(v, "nats")} if hosts else {}
    spec = pod_spec(v, [container], [{"name": "config", "secret": {
        "secretName": secret_names(v["prefix"])["nats-config"], "defaultMode": 0o440}}],
        securityContext=restricted_pod(NATS_UID), terminationGracePeriodSeconds=60, **extra)
    sts_spec: Doc = {"serviceName": name(v, "nats-headless"), "replicas": nats_replicas(v)}
    if hosts:
        sts_spec["podManagementPolicy"] = "Parallel"
    sts = workload(v, "StatefulSet", "nats", {**sts_spec, "volumeClaimTemplates": [claim(c)]}, spec)
    headless_ports = [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"]} for p in ports]
    return [sts, headless_service(v, "nats", headless_ports),
            service(v, "nats", [{"name": "nats", "port": NATS_PORT, "targetPort": "nats"}])]


# -- Valkey --------------------------------------------------------------------------------------

def valkey(v: Doc) -> list[Doc]:
    return valkey_with_sentinel(v) if v["valkey"]["sentinel"] else valkey_single(v)


def valkey_probes(port: str) -> Doc:
    # the default user is off, so a probe cannot log in: a TCP connect
    return {"readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 10, "failureThreshold": 6}}


def acl_secret_volume(v: Doc, vol: str, keys: list[str]) -> Doc:
    """The valkey-acl Secret, only `keys` of it: a Sentinel sees its own login, nothing else."""
    return {"name": vol, "secret": {"secretName": secret_names(v["prefix"])["valkey-acl"], "defaultMode": 0o440,
                                    "items": [{"key": k, "path": k} for k in keys]}}


def valkey_single(v: Doc) -> list[Doc]:
    """One Valkey with append-only persistence; users and rights from the ACL file that
    thaw_core.store.acl writes."""
    c = v["valkey"]
    container = {"name": "valkey", "image": c["image"],
                 "command": ["valkey-server"],
                 "args": ["--aclfile", f"{SECRET_DIR}/{ACL_FILE}", "--appendonly", "yes", "--dir", "/data",
                          "--port", str(VALKEY_PORT)],
                 "ports": [{"name": "redis", "containerPort": VALKEY_PORT}], "resources": c["resources"],
                 "securityContext": restricted_container(), **valkey_probes("redis"),
                 "volumeMounts": [{"name": "acl", "mountPath": SECRET_DIR, "readOnly": True},
                                  {"name": "data", "mountPath": "/data"}]}
    spec = pod_spec(v, [container], [acl_secret_volume(v, "acl", [ACL_FILE])],
                    securityContext=restricted_pod(VALKEY_UID))
    sts = workload(v, "StatefulSet", "valkey", {"serviceName": name(v, "valkey"), "replicas": 1,
                                                "volumeClaimTemplates": [claim(c)]}, spec)
    return [sts, service(v, "valkey", [{"name": "redis", "port": VALKEY_PORT, "targetPort": "redis"}])]


def valkey_with_sentinel(v: Doc) -> list[Doc]:
    """StatefulSet `valkey` of two (a primary and its replica) and StatefulSet `valkey-sentinel`
    of three, each with a headless Service (stable names: Sentinel keeps nodes and peers by
    name, and a rescheduled pod keeps its name, not its address), and a Service `valkey-sentinel`
    the init containers ask. No Service for the data nodes: a client must reach the primary, and
    only the Sentinels know which one that is."""
    c = v["valkey"]
    data_ports = [{"name": "redis", "port": VALKEY_PORT, "targetPort": "redis"}]
    sentinel_ports = [{"name": "sentinel", "port": SENTINEL_PORT, "targetPort": "sentinel"}]
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(v, "valkey"), "data": valkey_templates(v)}
    return [config,
            valkey_data_nodes(v, c), headless_service(v, "valkey", data_ports),
            valkey_sentinels(v, c), headless_service(v, "valkey-sentinel", sentinel_ports),
            service(v, "valkey-sentinel", sentinel_ports)]


def valkey_templates(v: Doc) -> dict[str, str]:
    """The ConfigMap: both configs with @POD_HOST@ / @PRIMARY_HOST@ for the init scripts to fill,
    and the scripts. No password: those are appended from the Secret."""
    data_conf = [f"port {VALKEY_PORT}", "dir /data", f"aclfile {SECRET_DIR}/{ACL_FILE}", "appendonly yes",
                 # what this node tells the primary, and so the Sentinels, to reach it by
                 "replica-announce-ip @POD_HOST@", f"replica-announce-port {VALKEY_PORT}"]
    sentinel_conf = [f"port {SENTINEL_PORT}", f"dir {CONF_DIR}", "protected-mode no",
                     # before `monitor`: hostnames in, hostnames out (addresses change with every pod)
                     "sentinel resolve-hostnames yes", "sentinel announce-hostnames yes",
                     "sentinel announce-ip @POD_HOST@", f"sentinel announce-port {SENTINEL_PORT}",
                     f"sentinel monitor {MASTER_NAME} @PRIMARY_HOST@ {VALKEY_PORT} {QUORUM}",
                     f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                     f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                     f"sentinel parallel-syncs {MASTER_NAME} 1",
                     f"sentinel auth-user {MASTER_NAME} {SENTINEL_USER}"]
    return {"valkey.conf": "\n".join(data_conf) + "\n", "sentinel.conf": "\n".join(sentinel_conf) + "\n",
            "init-valkey.sh": init_script(v, "valkey", REPLICATION_CONF, replica_of_primary=True),
            "init-sentinel.sh": init_script(v, "valkey-sentinel", SENTINEL_AUTH_CONF, replica_of_primary=False)}


def init_script(v: Doc, component: str, secret_file: str, replica_of_primary: bool) -> str:
    """The init container's script: write CONF_DIR/<conf> (a writable volume: Valkey rewrites its
    config on every promotion, Sentinel as it learns) from the template, this pod's name, the
    primary's and the Secret's lines. The primary is the one the Sentinels name; when none
    answers (first install, every Sentinel down) it is `valkey-0`."""
    conf = "valkey.conf" if replica_of_primary else "sentinel.conf"
    first = pod_dns_names(v, "valkey", 1)[0]
    lines = ["set -eu", f'me="$POD_NAME.{headless_domain(v, component)}"',
             # bounded: a Service with no endpoints may drop packets rather than refuse them
             f"primary=$(timeout 5 valkey-cli -h {name(v, 'valkey-sentinel')} -p {SENTINEL_PORT} --raw "
             f"sentinel get-master-addr-by-name {MASTER_NAME} 2>/dev/null | head -n 1 || true)",
             # an error or no answer is not a host name
             f'case "$primary" in ""|*[!a-z0-9.-]*) primary="{first}" ;; esac',
             'echo "primary: $primary"']
    if not replica_of_primary:
        # with resolve-hostnames, Sentinel refuses to start on a name that does not resolve yet
        lines.append('until getent hosts "$primary" >/dev/null; do echo "waiting for $primary"; sleep 2; done')
    lines += [f'sed -e "s/@POD_HOST@/$me/" -e "s/@PRIMARY_HOST@/$primary/" {TEMPLATE_DIR}/{conf} > {CONF_DIR}/{conf}',
              f"cat {SECRET_DIR}/{secret_file} >> {CONF_DIR}/{conf}"]
    if replica_of_primary:
        lines.append(f'[ "$primary" = "$me" ] || echo "replicaof $primary {VALKEY_PORT}" >> {CONF_DIR}/{conf}')
    return "\n".join(lines) + "\n"


def valkey_pod(v: Doc, component: str, main: Doc, secret_keys: list[str], resources: Doc) -> Doc:
    """A pod of the Sentinel setup: an init container writing the config from the ConfigMap and
    the Secret, then `main` running from it."""
    c = v["valkey"]
    script = "init-valkey.sh" if component == "valkey" else "init-sentinel.sh"
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    mounts = [{"name": "template", "mountPath": TEMPLATE_DIR, "readOnly": True},
              {"name": "secret", "mountPath": SECRET_DIR, "readOnly": True},
              {"name": "conf", "mountPath": CONF_DIR}]
    init = {"name": "config", "image": c["image"], "command": ["sh", f"{TEMPLATE_DIR}/{script}"], "env": env,
            "resources": resources, "securityContext": restricted_container(), "volumeMounts": mounts}
    # a data node reads its ACL file at start (and on ACL LOAD); a Sentinel needs nothing past its config
    own = mounts[1:] if component == "valkey" else mounts[2:]
    main = {"name": main["name"], "image": c["image"], **main, "resources": resources,
            "securityContext": restricted_container(), "volumeMounts": own + main.get("volumeMounts", [])}
    volumes = [{"name": "template", "configMap": {"name": name(v, "valkey")}},
               acl_secret_volume(v, "secret", secret_keys), {"name": "conf", "emptyDir": {}}]
    return pod_spec(v, [main], volumes, initContainers=[init], securityContext=restricted_pod(VALKEY_UID),
                    affinity=spread_over_nodes(v, component))


def valkey_data_nodes(v: Doc, c: Doc) -> Doc:
    main = {"name": "valkey", "command": ["valkey-server", f"{CONF_DIR}/valkey.conf"],
            "ports": [{"name": "redis", "containerPort": VALKEY_PORT}], **valkey_probes("redis"),
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    spec = valkey_pod(v, "valkey", main, [ACL_FILE, REPLICATION_CONF], c["resources"])
    # Parallel: each pod's init container decides its role, and an unready primary must not keep
    # the StatefulSet from recreating the replica (OrderedReady waits for every predecessor)
    return workload(v, "StatefulSet", "valkey", {"serviceName": name(v, "valkey-headless"), "replicas": 2,
                                                 "podManagementPolicy": "Parallel",
                                                 "volumeClaimTemplates": [claim(c)]}, spec)


def valkey_sentinels(v: Doc, c: Doc) -> Doc:
    main = {"name": "sentinel", "command": ["valkey-server", f"{CONF_DIR}/sentinel.conf", "--sentinel"],
            "ports": [{"name": "sentinel", "containerPort": SENTINEL_PORT}], **valkey_probes("sentinel")}
    spec = valkey_pod(v, "valkey-sentinel", main, [SENTINEL_AUTH_CONF], c["sentinelResources"])
    return workload(v, "StatefulSet", "valkey-sentinel", {"serviceName": name(v, "valkey-sentinel-headless"),
                                                          "replicas": 3, "podManagementPolicy": "Parallel"}, spec)
