"""Scaling decisions: pure functions of a function's spec, its pods and the time.

They return what to do; the worker does it. Pods still starting count as capacity (as Ray
Serve does), so a burst of lease requests never starts more pods than the burst needs.
"""

import math
from dataclasses import dataclass

from bus_schemas.functions import FunctionSpec
from bus_schemas.pods import NOT_READY, SERVING, PodState
from thaw_core.store.pods import PodRecord


def pods_to_start(spec: FunctionSpec, pods: list[PodRecord], want_pods: int) -> int:
    """How many new pods to place: enough for the unmet demand and for min_pods, within max_pods."""
    live = [p for p in pods if p.state in NOT_READY | SERVING]
    not_ready = sum(1 for p in live if p.state in NOT_READY)
    need = max(want_pods - not_ready, spec.scaling.min_pods - len(live), 0)
    return max(0, min(spec.scaling.max_pods - len(live), need))


@dataclass(frozen=True, slots=True)
class Demand:
    """Calls of one function that each need a worker slot now."""

    waiting: int = 0  # sync calls waiting at a gateway for a slot
    queued: int = 0  # async calls in the INFER_ASYNC work queue
    in_flight: int = 0  # calls a worker is running


def desired_pods(demand: Demand, concurrency: int, max_pods: int) -> int:
    """Pods that give every call of `demand` a slot at once, `concurrency` slots a pod, within
    max_pods; 0 for no calls."""
    calls = demand.waiting + demand.queued + demand.in_flight
    return min(max_pods, math.ceil(calls / max(concurrency, 1)))


def pods_for_demand(spec: FunctionSpec, pods: list[PodRecord], demand: Demand) -> int:
    """How many new pods to place so that the live ones (starting ones included) number
    `desired_pods`. Never negative: fewer calls than pods is scale-down's business (pods_to_drain
    drains only pods idle past their timeout), not this function's."""
    live = sum(1 for p in pods if p.state in NOT_READY | SERVING)
    return max(0, desired_pods(demand, spec.scaling.concurrency, spec.scaling.max_pods) - live)


def pods_to_drain(spec: FunctionSpec, pods: list[PodRecord], now_ms: int) -> list[str]:
    """Serving pods unused for idle_timeout_s, oldest first, keeping min_pods alive.

    The drain itself is a compare-and-set that also checks no lease is held, so a pod leased
    after this decision is never drained."""
    serving = [p for p in pods if p.state in SERVING]
    cutoff = now_ms - int(spec.scaling.idle_timeout_s * 1000)
    idle = sorted((p for p in serving if p.last_used_ms <= cutoff), key=lambda p: p.last_used_ms)
    keep = max(spec.scaling.min_pods - (len(serving) - len(idle)), 0)  # the most recently used stay
    return [p.pod for p in idle[:max(len(idle) - keep, 0)]]


def lost_pods(pods: list[PodRecord], heartbeat_ms: dict[str, int], seen_ms: dict[str, int], now_ms: int,
              node_timeout_s: float, unreported_grace_s: float, pending_timeout_s: float,
              watching_since_ms: int) -> list[tuple[str, str]]:
    """(pod, reason) for each pod no agent reports any more.

    A pod is lost when its node stopped heartbeating, when its live node has not listed it for
    unreported_grace_s, or when it stayed pending past pending_timeout_s.

    "Not listed for unreported_grace_s" is measured up to the node's latest heartbeat heard
    (`heartbeat_ms`), not up to now: heartbeats that are late (a busy agent, or a busy worker
    that has not read them yet) are not heartbeats without the pod. A node that falls silent
    altogether is node_timeout_s's business."""
    out = []
    for p in pods:
        hb = heartbeat_ms.get(p.node, 0)
        since = max(p.state_at_ms, watching_since_ms)
        last_seen = max(seen_ms.get(p.pod, 0), since)
        if now_ms - max(hb, watching_since_ms) > node_timeout_s * 1000:
            out.append((p.pod, f"node {p.node} stopped reporting"))
        elif p.state == PodState.PENDING:
            if now_ms - last_seen > pending_timeout_s * 1000:
                out.append((p.pod, f"no agent on {p.node} started it within {pending_timeout_s:.0f}s"))
        elif hb - last_seen > unreported_grace_s * 1000:
            out.append((p.pod, f"node {p.node} no longer reports it"))
    return out
