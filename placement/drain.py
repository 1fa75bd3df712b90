"""Handing a draining node's pods over to other nodes: pure functions of the pods, the draining
nodes and the time. The worker does what they return (placement/worker.py `_hand_over`).

A draining node (`thaw drain NODE`) takes no new pod: placement leaves it out of the nodes it
decides over (placement/capacity_view.py), and the ledger refuses a reservation on it. Its pods
leave without a gap for callers:

1. a pod there that serves nobody yet (pending, starting, restoring) is stopped at once;
2. for each serving pod there, a replacement of its function is placed on another node, past
   max_pods if need be: the ledger is given, as the function's limit of pods, the pods it has
   plus the replacements missing, so two placement workers deciding at once place them once;
3. once the replacements serve, the drained pods are retired, one per replacement serving beyond
   the ones still to be retired (`Leases.retire`: no new call reaches them; gateways give back
   the slots they hold as their calls end);
4. a retired pod is stopped once no call holds a slot on it, or after RETIRE_GRACE_MS at most
   (a gateway that missed the pod.state event keeps its slots until it renews them).

The replacements of a function are its live pods on other nodes created since the drain of the
node began: counted from the store each round, so the rule needs no memory and holds across
placement workers and restarts. A replacement that cannot be placed (no room anywhere else)
leaves the drained pod serving: the drain waits, and says why, rather than drop capacity.
"""

from dataclasses import dataclass, field

from bus_schemas.pods import LIVE_STATES, NOT_READY, SERVING, PodState
from thaw_core.store.pods import PodRecord

# A retired pod whose slots a gateway still holds is stopped after this long anyway: longer than
# a lease's TTL (a gateway that missed the event stops renewing only when a renewal fails).
RETIRE_GRACE_MS = 15_000
RETIRED = "node draining: replaced"  # a retired pod's reason: it is stopped even if its node is undrained meanwhile


@dataclass(frozen=True, slots=True)
class Handover:
    """What to do this round about the pods on draining nodes."""

    start: dict[str, int] = field(default_factory=dict)  # fn -> replacements to place elsewhere now
    pod_limit: dict[str, int] = field(default_factory=dict)  # fn -> its pods (the ledger's count) once placed
    retire: tuple[str, ...] = ()  # serving drained pods whose replacements serve
    stop: tuple[str, ...] = ()  # drained pods that serve nobody: stop now

    @property
    def idle(self) -> bool:
        return not (self.start or self.retire or self.stop)


def handover(pods: list[PodRecord], draining: dict[str, int]) -> Handover:
    """The next steps for `pods` (the live pods of deployed functions) given `draining` (node ->
    when its drain began, ms). See the module docstring for the rule."""
    start, limit, retire, stop = {}, {}, [], []
    by_fn: dict[str, list[PodRecord]] = {}
    for p in pods:
        by_fn.setdefault(p.fn, []).append(p)
    for fn, fn_pods in sorted(by_fn.items()):
        drained = [p for p in fn_pods if p.node in draining]
        stop += [p.pod for p in drained if p.state in NOT_READY]
        serving = sorted((p for p in drained if p.state in SERVING), key=lambda p: (p.last_used_ms, p.pod))
        if not serving:
            continue
        began_ms = min(draining[p.node] for p in serving)
        replacements = [p for p in fn_pods if p.node not in draining and p.state in LIVE_STATES
                        and p.created_ms >= began_ms]
        ready = sum(p.state in SERVING for p in replacements)
        if len(serving) > len(replacements):
            start[fn] = len(serving) - len(replacements)
            limit[fn] = len(fn_pods) + start[fn]  # the ledger counts every pod until it is stopped
        # Once placed, the replacements number at least the serving pods: retire as many of those
        # as keeps serving pods (drained and replacements) at that number, so the function keeps
        # the capacity it had when the drain began, however its replacements come up.
        target = max(len(serving), len(replacements))
        retire += [p.pod for p in serving[:max(0, len(serving) + ready - target)]]
    return Handover(start=start, pod_limit=limit, retire=tuple(retire), stop=tuple(stop))


def retired(pods: list[PodRecord]) -> list[PodRecord]:
    """The pods a drain retired that are not stopped yet."""
    return [p for p in pods if p.state == PodState.DRAINING and p.reason == RETIRED]


def retired_pods_to_stop(pods: list[PodRecord], in_use: dict[str, int], now_ms: int) -> list[str]:
    """The retired pods that may stop now: no call holds a slot on them (`in_use`: pod -> slots
    leased), or they were retired RETIRE_GRACE_MS ago."""
    return [p.pod for p in retired(pods) if in_use.get(p.pod, 0) == 0 or now_ms - p.state_at_ms >= RETIRE_GRACE_MS]


def drain_waiting(pods: list[PodRecord], draining: dict[str, int], unplaced: dict[str, str]) -> dict[str, str]:
    """Draining node -> why its drain waits ("" where nothing does): each function serving there
    whose replacement could not be placed this round (`unplaced`: fn -> why)."""
    out = {}
    for node in draining:
        fns = sorted({p.fn for p in pods if p.node == node and p.state in SERVING and p.fn in unplaced})
        out[node] = "; ".join(f"no other node takes a pod of {fn} ({unplaced[fn]})" for fn in fns)
    return out

