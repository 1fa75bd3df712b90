"""The building blocks every manifest of infra/k8s is made of: names, labels, pod security,
workloads and Services, as plain dicts (render.py and servers.py put them together)."""

from typing import Any

Doc = dict[str, Any]


def secret_names(prefix: str) -> dict[str, str]:
    """The Secrets the pods mount, by what they hold; make_secrets.py creates exactly these."""
    return {"nats-config": f"{prefix}-nats-config", "valkey-acl": f"{prefix}-valkey-acl",
            **{role: f"{prefix}-{role}-credentials"
               for role in ("gateway", "placement", "agent", "snapshotter", "operator")}}


def name(v: Doc, component: str) -> str:
    return f"{v['prefix']}-{component}"


def labels(v: Doc, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "thaw", "app.kubernetes.io/instance": v["prefix"],
            "app.kubernetes.io/component": component, "app.kubernetes.io/part-of": "thaw"}


def meta(v: Doc, component: str, suffix: str = "") -> Doc:
    return {"name": name(v, component) + suffix, "namespace": v["namespace"], "labels": labels(v, component)}


def headless_domain(v: Doc, component: str) -> str:
    """The DNS domain of `component`'s StatefulSet pods: its headless Service `<component>-headless`."""
    return f"{name(v, component)}-headless.{v['namespace']}.svc"


def pod_dns_names(v: Doc, component: str, replicas: int) -> list[str]:
    """Each StatefulSet pod's stable DNS name: it stays when the pod is rescheduled with a new address."""
    return [f"{name(v, component)}-{i}.{headless_domain(v, component)}" for i in range(replicas)]


def restricted_container() -> Doc:
    """Pod Security "restricted": no root, no privilege escalation, no capabilities."""
    return {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def restricted_pod(uid: int) -> Doc:
    return {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid, "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"}}


def pod_spec(v: Doc, containers: list[Doc], volumes: list[Doc], **extra: Any) -> Doc:
    spec: Doc = {**extra, "containers": containers, "volumes": volumes}
    if v["imagePullSecrets"]:
        spec["imagePullSecrets"] = [{"name": n} for n in v["imagePullSecrets"]]
    return spec


def spread_over_nodes(v: Doc, component: str) -> Doc:
    """Prefer one pod of `component` per node, so one lost node takes one member of a quorum.
    Preferred, not required: a cluster with fewer nodes still schedules them all."""
    term = {"labelSelector": {"matchLabels": labels(v, component)}, "topologyKey": "kubernetes.io/hostname"}
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": term}]}}


def workload(v: Doc, kind: str, component: str, spec: Doc, template_spec: Doc) -> Doc:
    selector = {"matchLabels": labels(v, component)}
    template = {"metadata": {"labels": labels(v, component)}, "spec": template_spec}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta(v, component),
            "spec": {**spec, "selector": selector, "template": template}}


def service(v: Doc, component: str, ports: list[Doc], suffix: str = "") -> Doc:
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(v, component, suffix),
            "spec": {"selector": labels(v, component), "ports": ports}}


def headless_service(v: Doc, component: str, ports: list[Doc]) -> Doc:
    """`<component>-headless`: a DNS name per StatefulSet pod, published before the pod is
    ready, since peers must find each other to become ready at all."""
    doc = service(v, component, ports, "-headless")
    doc["spec"] = {"clusterIP": "None", "publishNotReadyAddresses": True, **doc["spec"]}
    return doc


def claim(c: Doc) -> Doc:
    spec: Doc = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": c["storage"]}}}
    if c["storageClassName"]:
        spec["storageClassName"] = c["storageClassName"]
    return {"metadata": {"name": "data"}, "spec": spec}
