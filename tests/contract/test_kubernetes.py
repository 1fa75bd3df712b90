"""The Kubernetes manifests (infra/k8s): valid against the Kubernetes API's schemas, equal to the
committed rendering, and holding what a reviewer checks by hand: only the node pod is
privileged, no secret inline, every container asks for resources, every service container runs
a real entry point with flags its own parser accepts, and every credentials file a pod is told
to read is in the Secret mounted there.

Refresh the snapshot after an intended change: THAW_UPDATE_FIGURES=1 pytest tests/contract/test_kubernetes.py
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from thaw_core.servers import nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra" / "k8s"))  # make_secrets imports render by name, as when run as a script
render = importlib.import_module("render")
make_secrets = importlib.import_module("make_secrets")
provision_streams = importlib.import_module("provision_streams")

SNAPSHOT = ROOT / "tests" / "contract" / "samples" / "k8s-rendered.yaml"
# An older release clusters still run (nothing used is newer: seccompProfile, runtimeClassName and
# ttlSecondsAfterFinished are GA since 1.23 at the latest) and the newest the validator bundles.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
NODE = "gpu-1"  # stands for $(NODE_NAME), which the kubelet fills in from spec.nodeName
SERVICES = {"gateway", "placement", "agents", "snapshotter"}
NODE_POD_CONTAINERS = {"agent", "snapshotter"}

VARIANTS = {
    "defaults": [],
    "gpu-fleet": ["gateway.replicas=3", "placement.replicas=3", "node.gpuResource=1",
                  "node.sharedDir=/mnt/thaw-shared", "imagePullSecrets=[regcred]",
                  "nats.storageClassName=fast-ssd",
                  'node.tolerations=[{key: dedicated, operator: Equal, value: thaw-gpu, effect: NoSchedule}]'],
}


def rendered(variant: str) -> list[dict]:
    return render.render(render.load_values(sets=VARIANTS[variant]))


def pod_templates(docs: list[dict]):
    """(workload, pod spec) for every object that runs pods."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def containers(docs: list[dict]):
    for doc, spec in pod_templates(docs):
        for container in spec["containers"]:
            yield doc, spec, container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(variant, version):
    # strict: a misspelt or misplaced field (which kubectl would drop or refuse) fails here
    for doc in rendered(variant):
        kubernetes_validate.validate(doc, version, strict=True)


def test_rendered_manifests_equal_the_committed_snapshot():
    text = render.to_yaml(rendered("defaults"))
    if os.environ.get("THAW_UPDATE_FIGURES"):
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text(), (
        "infra/k8s renders differently from tests/contract/samples/k8s-rendered.yaml: if intended, "
        "refresh it with THAW_UPDATE_FIGURES=1 and review the diff")


def test_non_default_values_reach_the_manifests():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in rendered("gpu-fleet")}
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


def test_the_nats_config_make_secrets_writes_is_one_nats_server_accepts(tmp_path):
    make_secrets.make_files(tmp_path, [NODE, "gpu-2"])
    check = subprocess.run([nats_server_binary(), "-t", "-c", str(tmp_path / make_secrets.NATS_CONFIG)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr + check.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_credentials_flag_names_a_file_of_the_secret_mounted_there(variant, tmp_path):
    docs = rendered(variant)
    holds = {name: {p.name for p in paths}
             for name, paths in make_secrets.secret_files(tmp_path, [NODE], "thaw").items()}
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
    node_toml.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["node.toml"])
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
