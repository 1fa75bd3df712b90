"""Redis key layout. Redis is the source of truth for pods, leases and the GPU ledger.

All keys of one kind share a prefix so an operator can `SCAN MATCH thaw:pod:*`.
"""

PREFIX = "thaw:"


def function(fn: str) -> str:
    """Hash: spec (JSON), revision, tenant."""
    return f"{PREFIX}fn:{fn}"


FUNCTIONS = f"{PREFIX}fns"  # set of function names


def function_pods(fn: str) -> str:
    """Set of pod ids of a function that are not yet terminal."""
    return f"{PREFIX}fn:{fn}:pods"


def pod(pod_id: str) -> str:
    """Hash: fn, node, state, endpoint, concurrency, gpus (JSON), vram_mib, gpu_milli, cpu_milli,
    memory_mib, last_used_ms, state_at_ms, pid, reason."""
    return f"{PREFIX}pod:{pod_id}"


def pod_leases(pod_id: str) -> str:
    """Sorted set: lease slot id -> expiry (ms since epoch). One member per request slot."""
    return f"{PREFIX}pod:{pod_id}:leases"


ALL_PODS = f"{PREFIX}pods"  # set of pod ids that are not yet terminal


def node(node_name: str) -> str:
    """Hash: capacity JSON, cpu_milli, memory_mib totals, cpu/memory reserved, last heartbeat."""
    return f"{PREFIX}node:{node_name}"


NODES = f"{PREFIX}nodes"  # set of node names


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
    """Hash: metadata of one snapshot (size, tiers, sha256, node, created)."""
    return f"{PREFIX}snapshot:{snapshot_id}"
