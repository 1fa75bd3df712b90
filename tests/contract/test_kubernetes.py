"""The Kubernetes manifests (infra/k8s): valid against the Kubernetes API's schemas, equal to the
committed rendering, and holding what a reviewer checks by hand: only the node pod is
privileged, no secret inline, every container asks for resources, every service container runs
a real entry point with flags its own parser accepts, and every credentials file a pod is told
to read is in the Secret mounted there. The HA setups (the defaults: a NATS cluster of three,
Valkey with a replica and three Sentinels) are checked with the real servers where a laptop can
run them: the cluster config make_secrets writes forms a cluster and takes R3 streams, and the
Sentinel setup's init scripts write configs valkey-server starts from.

Refresh the snapshot after an intended change: THAW_UPDATE_FIGURES=1 pytest tests/contract/test_kubernetes.py
"""

import asyncio
import importlib
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import redis
import yaml

from bus_schemas import permissions as P
from thaw_core import bus_auth, nats_cluster, valkey_sentinel
from thaw_core.ports import free_port
from thaw_core.servers import nats_server_binary, valkey_server_binary, wait_for_port
from thaw_core.store import acl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra" / "k8s"))  # make_secrets imports render by name, as when run as a script
render = importlib.import_module("render")
make_secrets = importlib.import_module("make_secrets")
provision_streams = importlib.import_module("provision_streams")
servers = importlib.import_module("servers")

SAMPLES = ROOT / "tests" / "contract" / "samples"
# An older release clusters still run (nothing used is newer: seccompProfile, runtimeClassName and
# ttlSecondsAfterFinished are GA since 1.23 at the latest) and the newest the validator bundles.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
NODE = "gpu-1"  # stands for $(NODE_NAME), which the kubelet fills in from spec.nodeName
SERVICES = {"gateway", "placement", "agents", "snapshotter"}
NODE_POD_CONTAINERS = {"agent", "snapshotter"}

SINGLE = ["nats.replicas=1", "valkey.sentinel=false"]
VARIANTS = {
    "defaults": [],
    "single": SINGLE,
    "gpu-fleet": ["gateway.replicas=3", "placement.replicas=3", "node.gpuResource=1",
                  "node.sharedDir=/mnt/thaw-shared", "imagePullSecrets=[regcred]",
                  "nats.storageClassName=fast-ssd",
                  'node.tolerations=[{key: dedicated, operator: Equal, value: thaw-gpu, effect: NoSchedule}]'],
}


def rendered(variant: str) -> list[dict]:
    return render.render(render.load_values(sets=VARIANTS[variant]))


def by_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def pod_templates(docs: list[dict]):
    """(workload, pod spec) for every object that runs pods."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def containers(docs: list[dict]):
    """Every container, init containers included."""
    for doc, spec in pod_templates(docs):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield doc, spec, container


def arg(container: dict, flag: str) -> str:
    return container["args"][container["args"].index(flag) + 1]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(variant, version):
    # strict: a misspelt or misplaced field (which kubectl would drop or refuse) fails here
    for doc in rendered(variant):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("variant, sample", [("defaults", "k8s-rendered.yaml"),
                                             ("single", "k8s-rendered-single.yaml")])
def test_rendered_manifests_equal_the_committed_snapshot(variant, sample):
    text = render.to_yaml(rendered(variant))
    if os.environ.get("THAW_UPDATE_FIGURES"):
        (SAMPLES / sample).write_text(text)
    assert text == (SAMPLES / sample).read_text(), (
        f"infra/k8s renders differently from tests/contract/samples/{sample}: if intended, "
        "refresh it with THAW_UPDATE_FIGURES=1 and review the diff")


def test_non_default_values_reach_the_manifests():
    docs = by_name(rendered("gpu-fleet"))
    assert docs["Deployment", "thaw-gateway"]["spec"]["replicas"] == 3
    assert docs["Deployment", "thaw-placement"]["spec"]["replicas"] == 3
    node = docs["DaemonSet", "thaw-node"]["spec"]["template"]["spec"]
    assert node["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "thaw-gpu",
                                    "effect": "NoSchedule"}]
    agent = next(c for c in node["containers"] if c["name"] == "agent")
    assert agent["resources"]["limits"]["nvidia.com/gpu"] == 1
    snapshotter = next(c for c in node["containers"] if c["name"] == "snapshotter")
    assert "--shared-dir" in snapshotter["args"]
    assert node["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_the_node_pods_agent_and_snapshotter_are_privileged(variant):
    for doc, spec, container in containers(rendered(variant)):
        context = container.get("securityContext", {})
        on_the_node = doc["kind"] == "DaemonSet" and container["name"] in NODE_POD_CONTAINERS
        if on_the_node:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']} container {container['name']}"
        assert not context.get("privileged"), where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert context.get("capabilities") == {"drop": ["ALL"]}, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert not any(spec.get(k) for k in ("hostPID", "hostNetwork", "hostIPC")), where
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_requests_cpu_and_memory(variant):
    for doc, _, container in containers(rendered(variant)):
        requests = container.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= requests.keys(), f"{doc['metadata']['name']}/{container['name']}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_secret_is_inline_in_the_manifests(variant):
    docs = rendered(variant)
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets come from make_secrets.py, never the manifests"
    for doc, _, container in containers(docs):
        for env in container.get("env", []):
            assert "value" not in env or not any(w in env["name"].upper() for w in ("PASS", "TOKEN", "SECRET", "KEY")), env


def test_rendered_manifests_and_printed_commands_hold_no_password(tmp_path, capsys):
    make_secrets.main(["--nodes", NODE, "--dir", str(tmp_path / "s")])
    printed = capsys.readouterr().out
    passwords = [yaml.safe_load(p.read_text())["password"] for p in (tmp_path / "s").glob("*.json")]
    assert len(passwords) >= 10
    text = render.to_yaml(rendered("defaults")) + printed + render.DEFAULT_VALUES.read_text()
    assert not [p for p in passwords if p in text]


@pytest.mark.parametrize("variant", ["defaults", "single"])
def test_the_nats_config_make_secrets_writes_is_one_nats_server_accepts(variant, tmp_path):
    make_secrets.main(["--nodes", f"{NODE},gpu-2", "--dir", str(tmp_path), *sets_flags(variant)])
    check = subprocess.run([nats_server_binary(), "-t", "-c", str(tmp_path / make_secrets.NATS_CONFIG)],
                           capture_output=True, text=True, timeout=30, env={**os.environ, "SERVER_NAME": "thaw-nats-0"})
    assert check.returncode == 0, check.stderr + check.stdout


def sets_flags(variant: str) -> list[str]:
    return [f for s in VARIANTS[variant] for f in ("--set", s)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_credentials_flag_names_a_file_of_the_secret_mounted_there(variant, tmp_path):
    docs = rendered(variant)
    sentinel = render.load_values(sets=VARIANTS[variant])["valkey"]["sentinel"]
    holds = {name: {p.name for p in paths}
             for name, paths in make_secrets.secret_files(tmp_path, [NODE], "thaw", sentinel).items()}
    mounted = {s["secret"]["secretName"] for _, spec in pod_templates(docs) for s in spec["volumes"] if "secret" in s}
    assert mounted == set(holds), "the manifests mount exactly the Secrets make_secrets.py makes"
    for _, spec, container in containers(docs):
        args = [a.replace("$(NODE_NAME)", NODE) for a in container.get("args", [])]
        secrets_at = {m["mountPath"]: next(v["secret"]["secretName"] for v in spec["volumes"] if v["name"] == m["name"])
                      for m in container.get("volumeMounts", [])
                      if any(v["name"] == m["name"] and "secret" in v for v in spec["volumes"])}
        for flag, path in zip(args, args[1:]):
            if flag not in ("--nats-credentials", "--redis-credentials"):
                continue
            parent, files = str(Path(path).parent), {Path(path).name}
            if container["name"] == "gateway" and flag == "--nats-credentials":
                files.add("nats-gateway-stream.json")  # its second bus user, read from beside the first
            assert parent in secrets_at, f"{container['name']}: nothing mounted at {parent}"
            assert files <= holds[secrets_at[parent]], f"{container['name']}: {files} not all in {secrets_at[parent]}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_placement_replica_names_itself_so_each_gets_its_own_capacity_consumer(variant):
    """A worker's capacity consumer is named after its --name (bus_schemas.streams): replicas
    sharing one name would share one consumer, and each would hear only some nodes."""
    [worker] = [c for _, _, c in containers(rendered(variant)) if c["name"] == "placement"]
    args = worker["args"]
    assert args[args.index("--name") + 1] == "$(POD_NAME)"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in worker["env"]


def run_entry_point(module_name: str, args: list[str], monkeypatch) -> list:
    """Run `python -m module_name ARGS` up to the point where it would start serving: its real
    parser and settings, with start-up I/O replaced. Returns what it would have run."""
    module = importlib.import_module(f"{module_name}.__main__")
    started = []
    monkeypatch.setattr(module, "run_until_signalled", lambda run, **kw: started.append(run))
    for name in ("setup_logging", "setup_tracing", "tune_gc_for_throughput"):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, lambda *a, **kw: None)
    monkeypatch.setattr(sys, "argv", [f"python -m {module_name}", *args])
    module.main()
    return started


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_service_container_runs_a_real_entry_point_with_flags_it_accepts(variant, tmp_path, monkeypatch):
    docs = rendered(variant)
    node_toml = tmp_path / "node.toml"  # the ConfigMap's file, read by the agent's own loader
    node_toml.write_text(by_name(docs)["ConfigMap", "thaw-node"]["data"]["node.toml"])
    seen = set()
    for doc, _, container in containers(docs):
        command = container.get("command", [])
        if command[:2] != ["python", "-m"]:
            continue
        module_name = command[2]
        assert module_name in SERVICES, f"{container['name']}: python -m {module_name} is not a Thaw service"
        args = [str(node_toml) if a == render.NODE_CONFIG else a.replace("$(NODE_NAME)", NODE)
                for a in container["args"]]
        assert len(run_entry_point(module_name, args, monkeypatch)) == 1, f"{module_name} did not reach its start"
        seen.add(module_name)
    assert seen == SERVICES


def test_the_streams_job_runs_the_provisioning_script_with_flags_it_accepts():
    job = next(d for d in rendered("defaults") if d["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    script = Path(container["command"][1].replace("/opt/thaw/", f"{ROOT}/"))
    assert script == Path(provision_streams.__file__)  # the image keeps the repository at /opt/thaw
    provision_streams.parser().parse_args(container["args"])


def test_the_image_matches_what_the_manifests_assume():
    # the unprivileged pods run as the image's own user, and the Job finds the repository where it was copied
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    assert f"--uid {render.APP_UID} " in dockerfile and f"USER {render.APP_UID}" in dockerfile
    assert "COPY . /opt/thaw" in dockerfile


# -- the HA setups -------------------------------------------------------------------------------

def pod_hosts(docs: list[dict], sts_name: str) -> list[str]:
    """What each pod of a StatefulSet is called in DNS, from the manifest itself: <pod>.<its
    headless Service>.<namespace>.svc."""
    sts = by_name(docs)["StatefulSet", sts_name]
    domain = f"{sts['spec']['serviceName']}.{sts['metadata']['namespace']}.svc"
    assert ("Service", sts["spec"]["serviceName"]) in by_name(docs), f"{sts_name}: its headless Service is missing"
    return [f"{sts_name}-{i}.{domain}" for i in range(sts["spec"]["replicas"])]


def test_ha_is_the_default_and_one_server_each_remains_a_choice():
    ha, single = by_name(rendered("defaults")), by_name(rendered("single"))
    assert ha["StatefulSet", "thaw-nats"]["spec"]["replicas"] == 3
    assert ha["StatefulSet", "thaw-valkey"]["spec"]["replicas"] == 2  # a primary and its replica
    assert ha["StatefulSet", "thaw-valkey-sentinel"]["spec"]["replicas"] == 3
    for sts in ("thaw-nats", "thaw-valkey", "thaw-valkey-sentinel"):  # no member waits for another to be ready
        assert ha["StatefulSet", sts]["spec"]["podManagementPolicy"] == "Parallel"
    assert ("Service", "thaw-valkey") not in ha, "a Service over primary and replica would send writes to the replica"
    assert single["StatefulSet", "thaw-nats"]["spec"]["replicas"] == 1
    assert single["StatefulSet", "thaw-valkey"]["spec"]["replicas"] == 1
    assert not [k for k in single if "sentinel" in k[1]]


@pytest.mark.parametrize("replicas", ["2", "4", "0", "'3'"])
def test_a_nats_cluster_has_an_odd_number_of_servers(replicas):
    with pytest.raises(ValueError, match="nats.replicas"):
        render.render(render.load_values(sets=[f"nats.replicas={replicas}"]))


def test_every_service_is_given_every_nats_server_and_the_three_sentinels():
    docs = rendered("defaults")
    nats_urls = ",".join(f"nats://{h}:{servers.NATS_PORT}" for h in pod_hosts(docs, "thaw-nats"))
    sentinels = ",".join(f"{h}:{servers.SENTINEL_PORT}" for h in pod_hosts(docs, "thaw-valkey-sentinel"))
    given = [c for _, _, c in containers(docs) if "--nats" in c.get("args", [])]
    assert {c["name"] for c in given} == {"gateway", "placement", "agent", "snapshotter", "provision-streams"}
    for container in given:
        assert arg(container, "--nats") == nats_urls, container["name"]
        if container["name"] != "provision-streams":
            assert arg(container, "--redis") == f"redis+sentinel://{sentinels}/{valkey_sentinel.MASTER_NAME}"
    job = next(c for _, _, c in containers(docs) if c["name"] == "provision-streams")
    assert arg(job, "--replicas") == "3"


def test_the_single_server_setup_gives_the_services_its_services():
    docs = rendered("single")
    for _, _, container in containers(docs):
        if "--redis" in container.get("args", []):
            assert arg(container, "--nats") == "nats://thaw-nats.thaw.svc:4222"
            assert arg(container, "--redis") == "redis://thaw-valkey.thaw.svc:6379"
    job = next(c for _, _, c in containers(docs) if c["name"] == "provision-streams")
    assert arg(job, "--replicas") == "1"


def test_the_manifests_names_agree_with_the_platforms_own_ha_setups():
    assert (servers.MASTER_NAME, servers.QUORUM) == (valkey_sentinel.MASTER_NAME, valkey_sentinel.QUORUM)
    assert (servers.REPLICA_USER, servers.SENTINEL_USER) == (valkey_sentinel.REPLICA_USER, valkey_sentinel.SENTINEL_USER)
    assert make_secrets.ROUTE_USER not in {u.name for u in P.platform_users((NODE,))}


def nats_config(tmp_path: Path, variant: str = "defaults") -> str:
    make_secrets.main(["--nodes", NODE, "--dir", str(tmp_path), *sets_flags(variant)])
    return (tmp_path / make_secrets.NATS_CONFIG).read_text()


def test_each_nats_server_routes_to_every_member_as_the_route_user_and_carries_every_user(tmp_path, capsys):
    text = nats_config(tmp_path)
    route = bus_auth.read_credentials(bus_auth.credentials_path(tmp_path, make_secrets.ROUTE_USER))
    routes = json.loads(re.search(r"^  routes: (.*)$", text, re.M).group(1))
    hosts = pod_hosts(rendered("defaults"), "thaw-nats")
    assert routes == [f"nats-route://{route.user}:{route.password}@{h}:6222" for h in hosts]
    assert f'authorization {{ user: "{route.user}", password: "{route.password}" }}' in text
    assert f'name: "{nats_cluster.CLUSTER_NAME}"' in text and 'listen: "0.0.0.0:6222"' in text
    assert "server_name: $SERVER_NAME" in text  # the pod's name: each member's own, stable
    users = {u.name for u in P.platform_users((NODE,))}
    assert users <= set(re.findall(r'"user": "([^"]+)"', text))


def test_one_nats_server_has_no_cluster_block(tmp_path, capsys):
    text = nats_config(tmp_path, "single")
    assert "cluster" not in text and "server_name: $SERVER_NAME" in text
    assert not bus_auth.credentials_path(tmp_path, make_secrets.ROUTE_USER).exists()


def localised_member(text: str, i: int, hosts: list[str], ports: list[tuple[int, int, int]], store: Path) -> str:
    """Member i's config with the pods' names and fixed ports swapped for loopback and free ports."""
    client, cluster, monitor = ports[i]
    for host, (_, other_cluster, _) in zip(hosts, ports):
        text = text.replace(f"{host}:6222", f"127.0.0.1:{other_cluster}")
    return (text.replace('listen: "0.0.0.0:4222"', f'listen: "127.0.0.1:{client}"')
                .replace('listen: "0.0.0.0:6222"', f'listen: "127.0.0.1:{cluster}"')
                .replace("http_port: 8222", f"http_port: {monitor}")
                .replace('"/data/jetstream"', json.dumps(str(store))))


def test_the_cluster_config_forms_a_cluster_that_keeps_the_streams_on_three_servers(tmp_path, capsys):
    """The config each pod gets, run by three nats-servers on loopback: the routes log in (a
    route without the route user's password is refused), a JetStream leader is elected, and
    the streams Job's step makes every stream R3."""
    text = nats_config(tmp_path / "secrets")
    hosts = pod_hosts(rendered("defaults"), "thaw-nats")
    ports = [(free_port(), free_port(), free_port()) for _ in hosts]
    processes, members = [], []
    try:
        for i, _ in enumerate(hosts):
            conf = tmp_path / f"nats-{i}.conf"
            conf.write_text(localised_member(text, i, hosts, ports, tmp_path / f"js-{i}"))
            log = open(tmp_path / f"nats-{i}.log", "wb")
            processes.append(subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log,
                                              env={**os.environ, "SERVER_NAME": f"thaw-nats-{i}"}))
            members.append(nats_cluster.Member(f"thaw-nats-{i}", ports[i][0], ports[i][1], ports[i][2], tmp_path))
        nats_cluster.wait_for_meta_leader(members, 30)
        operator = bus_auth.read_credentials(bus_auth.credentials_path(tmp_path / "secrets", P.OPERATOR))
        urls = ",".join(m.url for m in members)
        asyncio.run(provision_streams.provision(urls, operator, timeout_s=60, replicas=3))
        assert replicas_of_every_stream(ports[0][2]) == {3}
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def replicas_of_every_stream(monitor_port: int) -> set[int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/jsz?accounts=true&streams=true&config=true",
                                timeout=5) as reply:
        jsz = json.load(reply)
    streams = [s for a in jsz["account_details"] for s in a.get("stream_detail", [])]
    assert streams, jsz
    return {s["config"]["num_replicas"] for s in streams}


def test_sentinel_mode_adds_the_internal_users_and_their_logins_to_the_valkey_secret(tmp_path, capsys):
    make_secrets.main(["--nodes", NODE, "--dir", str(tmp_path / "ha")])
    ha = tmp_path / "ha"
    internal = {u: acl.read_credentials(acl.credentials_path(ha, u), u) for u in ("replica", "sentinel")}
    lines = (ha / make_secrets.VALKEY_ACL).read_text().splitlines()
    for user, rules in (("replica", valkey_sentinel.REPLICA_RULES), ("sentinel", valkey_sentinel.SENTINEL_RULES)):
        assert f"user {user} reset on #{acl.password_hash(internal[user].password)} {' '.join(rules)}" in lines
    assert (ha / servers.REPLICATION_CONF).read_text() == (
        f"masteruser replica\nmasterauth {internal['replica'].password}\n")
    assert (ha / servers.SENTINEL_AUTH_CONF).read_text() == f"sentinel auth-pass thaw {internal['sentinel'].password}\n"
    make_secrets.main(["--nodes", NODE, "--dir", str(tmp_path / "one"), *sets_flags("single")])
    assert not [line for line in (tmp_path / "one" / make_secrets.VALKEY_ACL).read_text().splitlines()
                if line.startswith(("user replica", "user sentinel"))]


def test_a_sentinel_pod_mounts_its_own_login_and_nothing_else_of_the_valkey_secret():
    docs = by_name(rendered("defaults"))
    volumes = {sts: {v["name"]: v for v in docs["StatefulSet", sts]["spec"]["template"]["spec"]["volumes"]}
               for sts in ("thaw-valkey", "thaw-valkey-sentinel")}
    keys = {sts: [i["key"] for i in v["secret"]["secret"]["items"]] for sts, v in volumes.items()}
    assert keys == {"thaw-valkey": ["users.acl", servers.REPLICATION_CONF],
                    "thaw-valkey-sentinel": [servers.SENTINEL_AUTH_CONF]}


class SentinelPods:
    """The Sentinel setup's ConfigMap and Secret files on this machine, and its init scripts run
    as the pods run them, with `valkey-cli` (asking the Sentinels for the primary) answering
    what a test says."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        make_secrets.main(["--nodes", NODE, "--dir", str(tmp_path / "secret")])
        self.template = tmp_path / "template"
        self.template.mkdir()
        for key, text in by_name(rendered("defaults"))["ConfigMap", "thaw-valkey"]["data"].items():
            (self.template / key).write_text(self.local(text, "none"))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        cli = bin_dir / "valkey-cli"
        cli.write_text('#!/bin/sh\nprintf "%s" "$SENTINELS_ANSWER"\n')
        cli.chmod(cli.stat().st_mode | stat.S_IEXEC)
        self.path = f"{bin_dir}:{os.environ['PATH']}"

    def local(self, text: str, pod: str) -> str:
        return (text.replace(servers.TEMPLATE_DIR, str(self.tmp / "template"))
                    .replace(servers.SECRET_DIR + "/", f"{self.tmp / 'secret'}/")
                    .replace(f" {servers.CONF_DIR}", f" {self.tmp / pod}"))

    def init(self, script: str, pod: str, sentinels_answer: str = "") -> str:
        """Run the init script as pod `pod`; returns the config it wrote."""
        (self.tmp / pod).mkdir(exist_ok=True)
        text = (self.template / script).read_text().replace(str(self.tmp / "none"), str(self.tmp / pod))
        subprocess.run(["sh", "-c", text], check=True, capture_output=True, timeout=30,
                       env={**os.environ, "PATH": self.path, "POD_NAME": pod, "SENTINELS_ANSWER": sentinels_answer})
        conf = self.tmp / pod / ("valkey.conf" if script == "init-valkey.sh" else "sentinel.conf")
        conf.write_text(conf.read_text().replace(str(self.tmp / "none"), str(self.tmp / pod)))  # Sentinel's `dir`
        return conf.read_text()


VALKEY_0, VALKEY_1 = "thaw-valkey-0.thaw-valkey-headless.thaw.svc", "thaw-valkey-1.thaw-valkey-headless.thaw.svc"


@pytest.mark.parametrize("pod, sentinels_answer, replica_of", [
    ("thaw-valkey-0", "", None),  # first install: no Sentinel answers, pod 0 is the primary
    ("thaw-valkey-1", "", VALKEY_0),
    ("thaw-valkey-0", f"{VALKEY_1}\n6379\n", VALKEY_1),  # after a failover, the old primary comes back a replica
    ("thaw-valkey-1", f"{VALKEY_1}\n6379\n", None),
    ("thaw-valkey-1", "ERR unknown command\n", VALKEY_0),  # an answer that is no host name is no answer
])
def test_a_data_node_starts_as_the_primary_the_sentinels_name_or_its_replica(tmp_path, capsys, pod,
                                                                              sentinels_answer, replica_of):
    conf = SentinelPods(tmp_path).init("init-valkey.sh", pod, sentinels_answer)
    lines = conf.splitlines()
    assert f"replica-announce-ip {pod}.thaw-valkey-headless.thaw.svc" in lines
    assert "masteruser replica" in lines and any(line.startswith("masterauth ") for line in lines)
    assert [line for line in lines if line.startswith("replicaof")] == ([f"replicaof {replica_of} 6379"]
                                                                        if replica_of else [])


def start_valkey(argv: list[str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen([valkey_server_binary(), *argv, "--port", str(port)], stdout=open(log, "wb"),
                               stderr=subprocess.STDOUT)
    wait_for_port(port, process, 15, log.stem)
    return process


def test_the_init_scripts_configs_replicate_and_are_watched_with_the_internal_users(tmp_path, capsys):
    """valkey-server runs from the configs the init containers write (pod names swapped for
    loopback): the replica copies the primary as `replica`, a Sentinel monitors master `thaw`
    with quorum 2 and reads the primary's INFO as `sentinel`."""
    pods = SentinelPods(tmp_path)
    primary_conf = pods.init("init-valkey.sh", "thaw-valkey-0")
    replica_conf = pods.init("init-valkey.sh", "thaw-valkey-1")
    sentinel_conf = pods.init("init-sentinel.sh", "thaw-valkey-sentinel-0", "localhost\n6379\n")
    assert "sentinel monitor thaw localhost 6379 2" in sentinel_conf.splitlines()
    assert "sentinel announce-ip thaw-valkey-sentinel-0.thaw-valkey-sentinel-headless.thaw.svc" in sentinel_conf
    ports = {"primary": free_port(), "replica": free_port(), "sentinel": free_port()}
    for pod, conf in (("thaw-valkey-0", primary_conf), ("thaw-valkey-1", replica_conf)):
        (tmp_path / pod / "valkey.conf").write_text(
            conf.replace("dir /data", f"dir {tmp_path / pod}")
                .replace(f"replicaof {VALKEY_0} 6379", f"replicaof 127.0.0.1 {ports['primary']}"))
    (tmp_path / "thaw-valkey-sentinel-0" / "sentinel.conf").write_text(
        sentinel_conf.replace("localhost 6379 2", f"localhost {ports['primary']} 2"))
    watcher = acl.read_credentials(acl.credentials_path(tmp_path / "secret", "sentinel"), "sentinel")
    processes = []
    try:
        processes.append(start_valkey([str(tmp_path / "thaw-valkey-0" / "valkey.conf")], ports["primary"],
                                      tmp_path / "primary.log"))
        processes.append(start_valkey([str(tmp_path / "thaw-valkey-1" / "valkey.conf")], ports["replica"],
                                      tmp_path / "replica.log"))
        processes.append(start_valkey([str(tmp_path / "thaw-valkey-sentinel-0" / "sentinel.conf"), "--sentinel"],
                                      ports["sentinel"], tmp_path / "sentinel.log"))
        with redis.Redis(port=ports["replica"], username=watcher.user, password=watcher.password,
                         decode_responses=True) as replica, redis.Redis(port=ports["sentinel"],
                                                                        decode_responses=True) as sentinel:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                master = sentinel.sentinel_master("thaw")
                # the primary's run id comes from its INFO, which only the `sentinel` user may read
                if replica.info("replication").get("master_link_status") == "up" and master["runid"]:
                    break
                time.sleep(0.2)
            assert replica.info("replication")["master_link_status"] == "up"
            assert master["quorum"] == 2 and master["runid"], master
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
