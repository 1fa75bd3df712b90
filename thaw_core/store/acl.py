"""Valkey users per role: who may touch which keys with which commands (DESIGN.md section 8).

Each service connects as its role's user; the default user is off, so a client without
credentials (a tenant's worker, say) can do nothing, and only `gateway` (POST /v1/keys) and
`operator` (`thaw up`, `thaw keys`) may write API keys. A role's rights are the union of the
*grants* of the store operations its service runs (GRANTS below, one per operation of
`thaw_core.store`): the key patterns it reads, those it writes, and every
command it sends, directly or from its Lua scripts. Valkey checks a script's declared KEYS
before it runs and every `redis.call` inside it against the caller's user (every key a script
touches is one it declares), so a script can never reach past its caller's grants.

Limits of key patterns, worth knowing before trusting them:
- they cannot tell one pod, node or tenant from another: an agent may transition any pod, and
  the agent and placement, which release reservations, may write any GPU or node counter;
- they cannot tell fields apart: whoever writes a function's hash (`gateway` deploys,
  `placement` records why it is unplaceable) may rewrite its spec;
- `thaw:fn:*` also matches each function's pod set and `thaw:pod:*` each pod's leases and
  events (globs have no "anything but ':'"), so write rights on those prefixes include them;
- SCAN takes no key, so it names every key (API keys only by their SHA-256): only the roles
  that list snapshots get it.
- a key a script declares must be writable even where the script only reads it: placement
  may write tenant quotas because the ledger's reserve script declares the quota key.

Credentials are random (`secrets`), kept one JSON file per role, `{"user": ..., "password": ...}`,
in a 0700 directory, files 0600, and made only when missing, so a restarted platform keeps them.
The ACL file holds each password's SHA-256, never the password.
"""

import fnmatch
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bus_schemas import redis_keys as K
from thaw_core.private_files import publish_once, replace_private

GATEWAY, PLACEMENT, AGENT, SNAPSHOTTER, OPERATOR = "gateway", "placement", "agent", "snapshotter", "operator"
ROLES = (GATEWAY, PLACEMENT, AGENT, SNAPSHOTTER, OPERATOR)


@dataclass(frozen=True, slots=True)
class Creds:
    """A Valkey user and its password (left out of repr, so it never reaches a log line)."""

    user: str
    password: str = field(repr=False)


class CredentialsError(Exception):
    """A credentials file that cannot be used: which file, why, and what to do about it."""

    def __init__(self, path: Path, why: str, fix: str):
        super().__init__(f"{path}: {why}; {fix}")
        self.path, self.why, self.fix = path, why, fix


def _every(key: Callable[..., str], arity: int = 1) -> str:
    """The glob that matches every key `key` makes: each of its arguments replaced by '*'."""
    return key(*["*"] * arity)


API_KEYS = _every(K.api_key)
FUNCTION = _every(K.function)  # also matches FUNCTION_PODS: thaw:fn:<fn>:pods
FUNCTION_PODS = _every(K.function_pods)
POD = _every(K.pod)  # also matches POD_EVENTS and POD_LEASES
POD_EVENTS = _every(K.pod_events)
POD_LEASES = _every(K.pod_leases)
NODE = _every(K.node)
NODE_DRAIN = _every(K.node_drain)
GPU = _every(K.gpu, 2)
RESERVATION = _every(K.reservation)
SNAPSHOT_INDEX = _every(K.snapshot_index)
SNAPSHOT = _every(K.snapshot)
SNAPSHOTTER_PRESENCE = _every(K.snapshotter)
SNAPSHOT_FAILURE = _every(K.snapshot_failure)
TENANT_QUOTA = _every(K.tenant_quota)
TENANT_USAGE = _every(K.tenant_usage)
START_FAILURES = _every(K.start_failures)
EVERY_THAW_KEY = K.PREFIX + "*"

# redis-py's own traffic: PING for health checks, CLIENT SETINFO (library name) on connect.
# AUTH and HELLO need no grant.
CONNECTION = ("ping", "client|setinfo")
# A registered script runs by EVALSHA and is loaded once on NOSCRIPT. EVAL is not needed.
SCRIPTS = ("evalsha", "script|load")
TRANSACTION = ("multi", "exec", "discard")  # pipeline(transaction=True)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one store operation needs: key patterns it only reads, key patterns it writes (and
    reads), and every command it sends, its scripts' commands included. Valkey treats every key
    a script declares (EVALSHA's KEYS) as read and written, so those belong in `writes` even
    where the script only reads them; keys a script builds in Lua are checked per command."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()


GRANTS: dict[str, Grant] = {
    # ApiKeys.caller / tenant_of
    "apikeys.lookup": Grant(reads=(API_KEYS,), commands=("get",)),
    # ApiKeys.create: POST /v1/keys (an admin key's tenant), `thaw keys`, `thaw up`'s first key
    "apikeys.create": Grant(writes=(API_KEYS,), commands=("set",)),
    # Functions.get / names / worker_uid / unplaceable
    "functions.read": Grant(reads=(FUNCTION, K.FUNCTIONS), commands=("hget", "hmget", "smembers")),
    # Functions.put (script) and delete (MULTI)
    "functions.deploy": Grant(writes=(FUNCTION, K.FUNCTIONS, K.WORKER_UIDS),
                              commands=(*SCRIPTS, *TRANSACTION, "hget", "hincrby", "hset", "hexists", "incr", "sadd",
                                        "del", "srem")),
    # Functions.record_unplaceable: placement, in the function's hash
    "functions.annotate": Grant(writes=(FUNCTION,), commands=("hset",)),
    # Pods.get / live_ids / live / recent_failures
    "pods.read": Grant(reads=(POD, K.ALL_PODS, FUNCTION_PODS, K.FAILED_PODS),
                       commands=("hget", "hgetall", "smembers", "zrangebyscore")),
    # Pods.move (script) and set_fields
    "pods.transition": Grant(writes=(POD,), commands=(*SCRIPTS, "hget", "hmget", "hset", "hincrby")),
    # events.record (MULTI) and events.read
    "pods.events": Grant(writes=(POD_EVENTS,), commands=(*TRANSACTION, "rpush", "ltrim", "expire", "lrange")),
    # Leases: acquire reads the function's pod set, then its script declares each pod's keys;
    # renew, release, sweep, begin_drain, retire declare theirs; in_use counts a pod's slots.
    "leases": Grant(reads=(FUNCTION_PODS,), writes=(POD, POD_LEASES),
                    commands=(*SCRIPTS, "smembers", "exists", "hget", "hmget", "hset", "hincrby", "zadd", "zcard",
                              "zcount", "zrem", "zremrangebyscore", "zscore")),
    # Ledger.reserve: every key declared, so every key writable, the tenant's quota included,
    # which the script only reads (see Grant)
    "ledger.reserve": Grant(writes=(RESERVATION, POD, FUNCTION_PODS, K.ALL_PODS, NODE, GPU, TENANT_USAGE,
                                    TENANT_QUOTA, NODE_DRAIN),
                            commands=(*SCRIPTS, "exists", "scard", "hget", "hexists", "hincrby", "hset", "del",
                                      "sadd")),
    # Ledger.release: reads the reservation and the pod's function, then its script declares
    # every key those name (node, GPUs, tenant usage, pod sets, leases)
    "ledger.release": Grant(writes=(RESERVATION, POD, POD_LEASES, FUNCTION_PODS, K.ALL_PODS, NODE, GPU,
                                    TENANT_USAGE, K.FAILED_PODS),
                            commands=(*SCRIPTS, "hgetall", "hget", "hmget", "hincrby", "hset", "del", "srem",
                                      "expire", "zadd", "zremrangebyscore")),
    # StartFailureLog.get: placement's backoff, the gateway's degraded status and 503 reasons
    "starts.read": Grant(reads=(START_FAILURES,), commands=("hgetall", "exists")),
    # StartFailureLog.record / clear (scripts): agents, as their pods fail to start or get healthy
    "starts.record": Grant(writes=(START_FAILURES,), commands=(*SCRIPTS, "hget", "hincrby", "hset", "del")),
    # Nodes.marks, Pods.get_many / live_by_function, Functions.get_many: one script reads many keys
    # (thaw_core/store/bulk.py), each declared, so each writable; only for roles that write
    # those keys anyway (placement: nodes, pods, functions; the gateway: functions)
    "functions.read_many": Grant(writes=(FUNCTION,), commands=(*SCRIPTS, "hmget")),
    "nodes.marks": Grant(writes=(NODE, NODE_DRAIN), commands=(*SCRIPTS, "hmget")),
    "pods.read_many": Grant(writes=(POD, FUNCTION_PODS), commands=(*SCRIPTS, "hgetall", "smembers")),
    # Nodes.all
    "nodes.read": Grant(reads=(NODE, GPU, K.NODES, NODE_DRAIN), commands=("smembers", "hgetall", "hmget", "hget")),
    # Nodes.upsert_capacity (MULTI), heartbeat and heartbeats (a script: thaw_core/store/bulk.py):
    # placement, from node.capacity / heartbeats
    "nodes.record": Grant(writes=(NODE, GPU, K.NODES),
                          commands=(*TRANSACTION, *SCRIPTS, "hset", "hincrby", "sadd")),
    # Nodes.set_draining: `thaw drain` through the gateway (an admin key); the node's own hash is
    # only read (does it exist), so the drain mark cannot touch its counters
    "nodes.drain": Grant(reads=(NODE,), writes=(NODE_DRAIN,), commands=("hexists", "hsetnx", "del")),
    # Nodes.note_drain_waiting: placement, why a drain waits
    "nodes.drain_note": Grant(writes=(NODE_DRAIN,), commands=("hset",)),
    # Quotas.get / describe
    "quotas.read": Grant(reads=(TENANT_QUOTA, TENANT_USAGE), commands=("hgetall",)),
    # Quotas.set (MULTI): `thaw quota`
    "quotas.set": Grant(writes=(TENANT_QUOTA,), commands=(*TRANSACTION, "hset", "hdel")),
    # SnapshotCatalog.get / for_function / latest / usable / capabilities / last_failure
    "snapshots.read": Grant(reads=(SNAPSHOT_INDEX, SNAPSHOT, SNAPSHOTTER_PRESENCE, SNAPSHOT_FAILURE),
                            commands=("get", "zrevrange", "hgetall")),
    # SnapshotCatalog.functions / all: SCAN MATCH thaw:snap:*
    "snapshots.list": Grant(reads=(SNAPSHOT_INDEX,), commands=("scan",)),
    # SnapshotIndex (the snapshotter's): add and remove (MULTI), record_failure
    "snapshots.index": Grant(writes=(SNAPSHOT_INDEX, SNAPSHOT, SNAPSHOT_FAILURE),
                             commands=(*TRANSACTION, "hset", "zadd", "zrem", "del")),
    # WorkloadCounts.load / add (script): the request shapes placement learns, shared by its workers
    "workload.learn": Grant(writes=(K.WORKLOAD,), commands=(*SCRIPTS, "hgetall", "hset", "hdel")),
    # announce_snapshotter / withdraw_snapshotter
    "snapshots.presence": Grant(writes=(SNAPSHOTTER_PRESENCE,), commands=("set", "del")),
}

ROLE_GRANTS: dict[str, tuple[str, ...]] = {
    GATEWAY: ("apikeys.lookup", "apikeys.create", "functions.read", "functions.read_many", "functions.deploy",
              "leases", "pods.read", "nodes.read", "nodes.drain", "snapshots.read", "snapshots.list", "starts.read"),
    PLACEMENT: ("functions.read", "functions.read_many", "functions.annotate", "pods.read", "pods.read_many",
                "pods.transition", "leases", "ledger.reserve", "ledger.release", "nodes.read", "nodes.marks",
                "nodes.record", "nodes.drain_note", "quotas.read", "snapshots.read", "starts.read", "workload.learn"),
    # The agent releases its pods' reservations when they stop (agents/lifecycle.py), hence
    # "ledger.release": see the module docstring for what that leaves open.
    # "starts.record": only the agent sees a start fail or succeed; its own key prefix, so this
    # gives no write on a function's spec.
    AGENT: ("functions.read", "pods.read", "pods.transition", "pods.events", "ledger.release", "snapshots.read",
            "starts.record"),
    # Not "functions.annotate": write access to a function's hash would let every node's
    # snapshotter rewrite any spec; a failed dump is recorded under snapshot_failure(fn), which
    # "snapshots.index" covers.
    # "pods.events": it says why it stopped a worker it restored (a lazy restore that failed).
    SNAPSHOTTER: ("pods.read", "pods.events", "snapshots.read", "snapshots.list", "snapshots.index", "snapshots.presence"),
}

# Every user: no pub/sub channels. The operator may read and write every Thaw key with any
# command but the @dangerous ones (FLUSHALL, KEYS, CONFIG, ACL, DEBUG, MODULE, SHUTDOWN, ...):
# administering the server itself is the deployment's job, through this file.
OPERATOR_RULES = (f"~{EVERY_THAW_KEY}", "+@all", "-@dangerous")


def role_rules(role: str) -> list[str]:
    """The ACL rules (after the password) that give `role` exactly its grants."""
    if role == OPERATOR:
        return list(OPERATOR_RULES)
    grants = [GRANTS[name] for name in ROLE_GRANTS[role]]
    writes = _broadest(p for g in grants for p in g.writes)
    reads = [p for p in _broadest(p for g in grants for p in g.reads) if not _covered(p, writes)]
    commands = _unique([*CONNECTION, *(c for g in grants for c in g.commands)])
    return [*(f"%R~{p}" for p in reads), *(f"~{p}" for p in writes), "-@all", *(f"+{c}" for c in commands)]


def acl_file_text(creds: dict[str, Creds]) -> str:
    """The `--aclfile` for these credentials: the default user off, one user per role, each
    with its password's SHA-256 (never the password) and its role's rules."""
    lines = ["user default reset off"]
    for role, c in creds.items():
        lines.append(" ".join(["user", c.user, "reset", "on", f"#{password_hash(c.password)}", *role_rules(role)]))
    return "\n".join(lines) + "\n"


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def valkey_args(aclfile: Path) -> list[str]:
    """The valkey-server flags that load `aclfile` (which must exist) at start."""
    return ["--aclfile", str(aclfile)]


def credentials_path(secrets_dir: Path, role: str) -> Path:
    return secrets_dir / f"{role}.json"


def ensure_credentials(secrets_dir: Path, roles: Iterable[str] = ROLES) -> dict[str, Creds]:
    """Each role's credentials, made (random password) only where its file is missing, so a
    restarted platform keeps them. The directory is made or tightened to 0700, files are 0600.
    Safe against a concurrent caller: a file is published whole, and only if still absent.
    Raises CredentialsError for a file that is not a credentials file of that role."""
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    out = {}
    for role in roles:
        path = credentials_path(secrets_dir, role)
        if not path.exists():
            body = json.dumps({"user": role, "password": secrets.token_urlsafe(32)}) + "\n"
            publish_once(path, body)
        out[role] = read_credentials(path, role)
        os.chmod(path, 0o600)
    return out


def read_credentials(path: Path, role: str | None = None) -> Creds:
    """The credentials in `path` (one role's JSON file). Raises CredentialsError if it is
    unreadable, malformed, or (with `role`) another role's."""
    try:
        raw = json.loads(path.read_text())
        creds = Creds(user=raw["user"], password=raw["password"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(path, f"not a credentials file ({type(exc).__name__})",
                               "restore it, or delete it and restart the platform to make new ones") from None
    if not (isinstance(creds.user, str) and isinstance(creds.password, str) and creds.password):
        raise CredentialsError(path, "user and password must be non-empty strings", "delete it and restart")
    if role is not None and creds.user != role:
        raise CredentialsError(path, f"holds user {creds.user!r}, not {role!r}", "delete it and restart")
    return creds


def write_acl_file(path: Path, creds: dict[str, Creds]) -> Path:
    """Write (or replace, whole) the ACL file for `creds`, mode 0600; returns `path`."""
    return replace_private(path, acl_file_text(creds))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _broadest(patterns: Iterable[str]) -> list[str]:
    """The patterns that no other one covers (thaw:pod:*:leases goes where thaw:pod:* is)."""
    found = _unique(patterns)
    return [p for p in found if not _covered(p, [q for q in found if q != p])]


def _covered(pattern: str, others: list[str]) -> bool:
    """Whether another glob matches every key `pattern` does. Our globs hold no special
    character but '*', so that is: the other matches `pattern`'s own text."""
    return any(fnmatch.fnmatchcase(pattern, other) for other in others)
