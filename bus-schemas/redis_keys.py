"""Redis key layout. Redis is the source of truth for pods, leases and the GPU ledger.

All keys of one kind share a prefix so an operator can `SCAN MATCH thaw:pod:*`.
"""

PREFIX = "thaw:"


def function(fn: str) -> str:
    """Hash: spec (JSON), revision, tenant."""
    return f"{PREFIX}fn:{fn}"


FUNCTIONS = f"{PREFIX}fns"  # set of function names
WORKER_UIDS = f"{PREFIX}worker_uids"  # counter: functions given a worker uid so far


def function_pods(fn: str) -> str:
    """Set of pod ids of a function that are not yet terminal."""
    return f"{PREFIX}fn:{fn}:pods"


def pod(pod_id: str) -> str:
    """Hash: fn, node, state, endpoint, concurrency, gpus (JSON), vram_mib, gpu_milli, cpu_milli,
    memory_mib, last_used_ms, state_at_ms, pid, reason."""
    return f"{PREFIX}pod:{pod_id}"


def pod_events(pod_id: str) -> str:
    """List: what happened to a pod that its state does not say, oldest first, one JSON object
    {"at_ms", "event", "detail"} per entry (e.g. why a restore fell back to a cold start).
    Kept for a day after the last entry."""
    return f"{PREFIX}pod:{pod_id}:events"


def pod_leases(pod_id: str) -> str:
    """Sorted set: lease slot id -> expiry (ms since epoch). One member per request slot."""
    return f"{PREFIX}pod:{pod_id}:leases"


ALL_PODS = f"{PREFIX}pods"  # set of pod ids that are not yet terminal
# Sorted set: pod id -> when it failed (ms), for the ledger's history window; the pod's hash
# (with its `reason`) lives as long. So `GET /v1/pods` and `thaw ls` can say what failed and why.
FAILED_PODS = f"{PREFIX}pods:failed"


def node(node_name: str) -> str:
    """Hash: capacity JSON, cpu_milli, memory_mib totals, cpu/memory reserved, last heartbeat."""
    return f"{PREFIX}node:{node_name}"


NODES = f"{PREFIX}nodes"  # set of node names


def node_drain(node_name: str) -> str:
    """Hash: draining_ms (when an operator began draining the node: `thaw drain`), drain_waiting
    (placement's: why some of its pods cannot leave yet). No draining_ms: not draining. Apart
    from the node's hash, so that who may drain a node may not touch its counters."""
    return f"{PREFIX}drain:{node_name}"

# Hash: request shape (a JSON array: fn, cpu_milli, memory_mib, gpu_count, gpu_milli, vram_mib,
# models) -> {"count", "at_ms"}, its count decayed to at_ms: the workload placement learns online
# (thaw_core/store/workload.py), shared by every placement worker and kept across restarts.
WORKLOAD = f"{PREFIX}workload"


def gpu(node_name: str, index: int) -> str:
    """Hash: vram_mib (capacity), vram_reserved_mib, milli_reserved, model."""
    return f"{PREFIX}gpu:{node_name}:{index}"


def reservation(pod_id: str) -> str:
    """Hash: what a pod holds in the ledger. Present exactly while the pod holds resources."""
    return f"{PREFIX}resv:{pod_id}"


def api_key(key_sha256_hex: str) -> str:
    """String: the tenant an API key belongs to. Only the key's SHA-256 is stored."""
    return f"{PREFIX}apikey:{key_sha256_hex}"


def snapshot_index(fn: str) -> str:
    """Sorted set: snapshot id -> created (ms)."""
    return f"{PREFIX}snap:{fn}"


def snapshot(snapshot_id: str) -> str:
    """Hash, written by the snapshotter: the manifest's fields as strings (id, fn, node, runtime,
    created_ms, sha256, size_bytes, raw_bytes, arch, kernel, criu_version, port, gpu,
    spec_digest, v) plus tiers (comma-separated, nearest first). Readers outside the
    snapshotter (placement, gateway) read it through thaw_core.store.snapshots."""
    return f"{PREFIX}snapshot:{snapshot_id}"


def snapshotter(node_name: str) -> str:
    """String with a TTL: a live snapshotter on `node_name` refreshes it (value: comma-separated
    capabilities such as "criu"). Absent means nothing on that node can dump or restore."""
    return f"{PREFIX}snapshotter:{node_name}"


def tenant_quota(tenant: str) -> str:
    """Hash: max_pods, max_vram_mib (absent: unlimited), set by an operator (`thaw quota`)."""
    return f"{PREFIX}tenant:{tenant}:quota"


def tenant_usage(tenant: str) -> str:
    """Hash: pods, vram_mib (summed over a pod's GPUs) the tenant holds; kept by the ledger."""
    return f"{PREFIX}tenant:{tenant}:usage"


def snapshot_failure(fn: str) -> str:
    """Hash: error, at_ms: why the last snapshot of `fn` failed (written by the snapshotter, which
    may not write the function's own hash: that holds the spec agents run). Not under
    `snapshot_index`'s prefix, which a SCAN lists as the functions that have snapshots."""
    return f"{PREFIX}snapfail:{fn}"


def start_failures(fn: str) -> str:
    """Hash: failures, last_ms, reason, digest: the consecutive failed starts of `fn`'s pods
    (written by agents), for placement's backoff and the function's `degraded` status. Counts
    only for the spec whose digest it names: a redeploy starts it afresh. Not under
    `function(fn)`, so agents, which write it, cannot write a function's spec."""
    return f"{PREFIX}startfail:{fn}"
