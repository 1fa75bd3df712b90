"""JetStream stream and durable-consumer specs. Plain data: the shared kernel provisions them."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: str = "limits"  # "limits" | "workqueue"
    max_msgs_per_subject: int = -1
    max_age_s: float = 0  # 0 keeps messages until limits say otherwise
    duplicate_window_s: float = 120  # Nats-Msg-Id de-duplication window
    max_msgs: int = -1  # -1: no limit
    max_bytes: int = -1
    discard: str = "old"  # at a limit: "old" drops the oldest, "new" refuses the publish
    replicas: int = 1  # copies kept on a NATS cluster (3 survives one server lost); 1 on one server


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    ack_wait_s: float = 30
    max_deliver: int = 10
    max_ack_pending: int = 256
    inactive_threshold_s: float = 0  # 0: kept for good; else the server drops it unbound this long
    pull_batch: int = 16  # messages fetched at once (when the next fetch goes: the subscriber's docstring)


FUNCTIONS = StreamSpec("FUNCTIONS", ("fn.>",), max_msgs_per_subject=16)
LEASES = StreamSpec("LEASES", ("lease.>",), max_age_s=3600)
PLACEMENT = StreamSpec("PLACEMENT", ("place.>",), max_age_s=24 * 3600)
PODS = StreamSpec("PODS", ("pod.>",), max_msgs_per_subject=64, max_age_s=24 * 3600)
NODES = StreamSpec("NODES", ("node.capacity.>",), max_msgs_per_subject=1)
# Not "snapshot.>": snapshot.restore.<node> is core request/reply and must not be captured.
SNAPSHOTS = StreamSpec("SNAPSHOTS", ("snapshot.requested.>", "snapshot.ready.>"), max_age_s=7 * 24 * 3600)
# Async calls wait here until a gateway ran them. Full means refused ("new"), never a queued call
# dropped: HTTP `?async=1` then answers 503. A call left a week (no gateway ever ran) expires.
INFER_ASYNC = StreamSpec("INFER_ASYNC", ("infer.async.>",), retention="workqueue", max_msgs=100_000,
                         max_bytes=2 << 30, max_age_s=7 * 24 * 3600, discard="new")
# Each call's latest state (and its answer) for GET /v1/calls/<id>: one message per call is kept,
# for a day; past the byte limit the oldest calls' results go first.
INFER_RESULTS = StreamSpec("INFER_RESULTS", ("infer.result.>",), max_msgs_per_subject=1, max_msgs=200_000,
                           max_bytes=2 << 30, max_age_s=24 * 3600)
# Calls that used up their attempts, with their bodies, until redriven (then deleted) or a week old.
INFER_DLQ = StreamSpec("INFER_DLQ", ("infer.dlq.>",), max_msgs=100_000, max_bytes=1 << 30,
                       max_age_s=7 * 24 * 3600)

ALL_STREAMS = (FUNCTIONS, LEASES, PLACEMENT, PODS, NODES, SNAPSHOTS, INFER_ASYNC, INFER_RESULTS, INFER_DLQ)

# Placement workers share one durable consumer, so each lease request is handled once.
# A placement worker places a fetch's requests as one batch (placement/batches.py): the larger
# the fetch, the fewer round trips a placement costs (bench/fleet_replay.py).
# Each placement worker may hold two fetches (thaw_core.subscriber.PullConsumer): the
# server's limit on unacked messages must let eight workers do so, or their fetches wait on it.
PLACEMENT_LEASES = ConsumerSpec("LEASES", "placement-leases", "lease.requested.>", ack_wait_s=15, pull_batch=128,
                                max_ack_pending=2048)


def placement_capacity(worker: str) -> ConsumerSpec:
    """Node capacity reaches every placement worker (each keeps its own capacity index), so each
    has its own durable, named by its `--name`: several workers need different names. A worker
    gone for an hour (a replaced pod, a renamed worker) leaves no durable behind: a new one
    starts from each node's last report, and the index is built from the store anyway."""
    return ConsumerSpec("NODES", f"placement-capacity-{worker}", "node.capacity.>", inactive_threshold_s=3600)


PLACEMENT_CAPACITY = placement_capacity("placement")  # the worker of the default name's

# Every gateway pulls async calls from one durable, so each call runs on one gateway at a time. A
# running call is kept ours by in-progress acks every ack_wait/4; a gateway that dies lets its
# calls go to another (or to itself, restarted) after ack_wait. Attempts are counted per function
# by the gateway (FunctionSpec.async_); max_deliver is only the backstop for a call that kills
# the gateway every time it runs.
GATEWAY_ASYNC = ConsumerSpec("INFER_ASYNC", "gateway-async", "infer.async.>", ack_wait_s=8, max_deliver=25,
                             max_ack_pending=512)


def snapshotter_requests(node: str) -> ConsumerSpec:
    """Each node's snapshotter has its own durable consumer of every snapshot request; it acts
    only on those naming its node (a dump must run where the worker runs). A dump can take
    tens of seconds, hence the long ack wait; a failed dump is not retried forever."""
    return ConsumerSpec("SNAPSHOTS", f"snapshotter-{node}", "snapshot.requested.>", ack_wait_s=300,
                        max_deliver=3, max_ack_pending=4)


def agent_placements(node: str) -> ConsumerSpec:
    """Each node's agent has its own durable consumer filtered to that node."""
    return ConsumerSpec("PLACEMENT", f"agent-{node}", f"place.*.{node}", ack_wait_s=60)
