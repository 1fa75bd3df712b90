"""Subject names. Lowercase, dot-separated, most general first (DESIGN.md section 2).

`place.stop.<node>` is not in DESIGN.md's table: stopping a pod is a placement decision sent
to one node, so it shares the PLACEMENT stream and the agent's per-node consumer
(`place.*.<node>`) with `place.assigned.<node>`, which keeps the two ordered per node.

`snapshot.restore.<node>` is not in the table either: it is core request/reply (agent -> that
node's snapshotter), not JetStream, because the agent waits on the answer with a deadline and
cold-starts without it; a stored request nobody answers in time is worthless, and there is no
history worth replaying (the pod's state changes on `pod.state.<pod>` are the history). It is
addressed per node because only the snapshotter beside the agent can restore a process there.
The SNAPSHOTS stream therefore lists `snapshot.requested.>` and `snapshot.ready.>`, not
`snapshot.>`: a stream that captured the restore subject would answer each request itself
with a publish acknowledgement.

`snapshot.ping.<node>` is core request/reply for the same reasons: every heartbeat the agent
asks its node's snapshotter whether it is there, and only an answer from the snapshotter's own
event loop counts (a frozen process, or a loop that stopped turning, does not answer).

`logs.read.<node>` is core request/reply too (gateway -> that node's agent): a worker's log is a
file beside it, read on demand (bus_schemas/logs.py); nothing about it is worth storing.

`infer.async.<fn>` is a client's *claim* (the body as payload, its API key in `Authorization`,
as on `infer.request.<fn>`): the gateway checks the key and the function's tenant before running
it. `infer.async.<fn>.accepted` is a call the gateway already authenticated (HTTP `?async=1`, a
redrive): only the gateway may publish there (a client's permission is `infer.async.*`, one
token), so its `Thaw-Call` header's tenant is trusted. Both land in the INFER_ASYNC work queue.
A call's state is kept on `infer.result.<id>` (INFER_RESULTS, last message per subject) and a
call that used up its attempts on `infer.dlq.<fn>` (INFER_DLQ).

`infer.stream.<fn>` is `infer.request.<fn>` with the answer streamed: many messages to the
request's reply inbox, not one (gateway/README.md has the protocol). It is a subject of its own,
not a header, because NATS grants "many answers per request" per user: a separate gateway user
answers this subject only, so the ordinary responder keeps NATS' one-answer rule and the server
tracks only streamed requests for long (bus_schemas/permissions.py).
"""

import re

INFER_REQUEST = "infer.request.{fn}"
INFER_STREAM = "infer.stream.{fn}"
INFER_ASYNC = "infer.async.{fn}"
INFER_ASYNC_ACCEPTED = "infer.async.{fn}.accepted"
INFER_RESULT = "infer.result.{id}"
INFER_DLQ = "infer.dlq.{fn}"
LEASE_REQUESTED = "lease.requested.{fn}"
PLACE_ASSIGNED = "place.assigned.{node}"
PLACE_STOP = "place.stop.{node}"
POD_STATE = "pod.state.{pod}"
NODE_CAPACITY = "node.capacity.{node}"
NODE_HEARTBEAT = "node.heartbeat.{node}"
SNAPSHOT_REQUESTED = "snapshot.requested.{fn}"
SNAPSHOT_READY = "snapshot.ready.{fn}"
SNAPSHOT_RESTORE = "snapshot.restore.{node}"
SNAPSHOT_PING = "snapshot.ping.{node}"
LOGS_READ = "logs.read.{node}"
FN_DEPLOYED = "fn.deployed.{fn}"
FN_DELETED = "fn.deleted.{fn}"

GATEWAY_QUEUE_GROUP = "gateway"

# A token is safe in a subject when it has no dot, wildcard or whitespace.
TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def infer_request(fn: str) -> str:
    return INFER_REQUEST.format(fn=fn)


def infer_stream(fn: str) -> str:
    return INFER_STREAM.format(fn=fn)


def infer_async(fn: str) -> str:
    return INFER_ASYNC.format(fn=fn)


def infer_async_accepted(fn: str) -> str:
    return INFER_ASYNC_ACCEPTED.format(fn=fn)


def infer_result(call_id: str) -> str:
    return INFER_RESULT.format(id=call_id)


def infer_dlq(fn: str) -> str:
    return INFER_DLQ.format(fn=fn)


def lease_requested(fn: str) -> str:
    return LEASE_REQUESTED.format(fn=fn)


def place_assigned(node: str) -> str:
    return PLACE_ASSIGNED.format(node=node)


def place_stop(node: str) -> str:
    return PLACE_STOP.format(node=node)


def place_for_node(node: str) -> str:
    """Filter for an agent's consumer: every placement message addressed to `node`."""
    return f"place.*.{node}"


def pod_state(pod: str) -> str:
    return POD_STATE.format(pod=pod)


def node_capacity(node: str) -> str:
    return NODE_CAPACITY.format(node=node)


def node_heartbeat(node: str) -> str:
    return NODE_HEARTBEAT.format(node=node)


def snapshot_requested(fn: str) -> str:
    return SNAPSHOT_REQUESTED.format(fn=fn)


def snapshot_ready(fn: str) -> str:
    return SNAPSHOT_READY.format(fn=fn)


def snapshot_restore(node: str) -> str:
    return SNAPSHOT_RESTORE.format(node=node)


def snapshot_ping(node: str) -> str:
    return SNAPSHOT_PING.format(node=node)


def logs_read(node: str) -> str:
    return LOGS_READ.format(node=node)


def fn_deployed(fn: str) -> str:
    return FN_DEPLOYED.format(fn=fn)


def fn_deleted(fn: str) -> str:
    return FN_DELETED.format(fn=fn)


def last_token(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]
