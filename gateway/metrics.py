"""Gateway metrics in the Prometheus text format, on GET /metrics.

Histograms, observed as calls are answered and pods come up:
- `thaw_gateway_first_answer_seconds{fn,start}`: from a call reaching the gateway to its worker's
  answer (its headers, for a streamed one). `start` says what the caller waited for: `warm` (a
  worker that was up already, perhaps after queueing behind other calls), `restored` or `cold`
  (a pod that came up, from a snapshot or from scratch, while the call waited).
- `thaw_gateway_request_seconds{fn}`: the whole call, to the last byte of a streamed answer.
- `thaw_pod_start_seconds{fn,start}`: a pod's start, from its agent beginning it to healthy, by how
  (from its agent's pod-state events, one node's clock). Every gateway sees every pod start:
  take one gateway's series (or quantiles over all), not the sum of counts.
Gauges computed from Redis on each scrape (the `observe_*` calls just before `render`), so what
is gone is gone from the next scrape too, with no refresh task to keep: `thaw_node_degraded{node}`,
`thaw_function_degraded{fn}`, `thaw_pods{fn,state}`, and per GPU `thaw_gpu_vram_mib` and
`thaw_gpu_vram_reserved_mib{node,gpu,model}`. From JetStream likewise, `thaw_async_queued_calls{fn}`:
the async queue's depth (thaw_core/async_queue.py), the same for every gateway, unlike
`thaw_gateway_waiting_calls{fn}` (the calls this gateway holds waiting for a slot).

For the dashboard (gateway/dashboard.py), besides: the last RECENT_CALLS answered calls, one by
one (`recent`: wall-clock time in seconds, fn, start, seconds to first answer; about 0.1 us a
call), and the states each of the last RECENT_PODS pods went through as the bus told (`pod_states`),
so a start that takes less than a poll still shows its steps.
"""

from bisect import bisect_left
from collections import deque
from time import time

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bus_schemas.pods import LIVE_STATES


UNATTRIBUTED = frozenset({401, 404})
# Seconds: a warm call takes milliseconds, a restore well under a second, a cold start of a
# model server tens of seconds.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LIVE_POD_STATES = tuple(sorted(s.value for s in LIVE_STATES))
RECENT_CALLS = 300  # of all functions together: a chart's worth, a few KiB
RECENT_PODS = 1000  # pods whose state changes are kept, the last to change
POD_STATES_KEPT = 12  # per pod, the last: a life is pending, starting or restoring, idle, draining, stopped


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls: dict[tuple[str, str, int], int] = {}
        self.registry.register(_CallCounts(self.calls))
        self.health = _Health()
        self.registry.register(self.health)
        self.waiting = Gauge("thaw_gateway_waiting_calls", "Calls waiting for a worker slot", ["fn"],
                             registry=self.registry)
        self.slots = Gauge("thaw_gateway_leased_slots", "Worker slots this gateway holds", ["fn"],
                           registry=self.registry)
        self.first_answer = _Histogram("thaw_gateway_first_answer_seconds", "From a call reaching the gateway to "
                                       "its worker's answer, by what it waited for: warm, restored or cold",
                                       ("fn", "start"), CALL_BUCKETS)
        self.request = _Histogram("thaw_gateway_request_seconds", "Calls from arrival to the last byte of the "
                                  "answer", ("fn",), CALL_BUCKETS)
        self.pod_start = _Histogram("thaw_pod_start_seconds", "Pod starts from the agent beginning them to healthy, "
                                    "by how: restored or cold", ("fn", "start"), START_BUCKETS)
        self.snapshot = _Histogram("thaw_snapshot_seconds", "Snapshots from the start of a warm pod's checkpoint "
                                   "to its image stored in its tiers", ("fn",), START_BUCKETS)
        self.fleet = _Fleet()
        self.async_queue = _AsyncQueue()
        self.recent: deque[tuple[float, str, str, float]] = deque(maxlen=RECENT_CALLS)
        self.pod_states: dict[str, list[tuple[str, int]]] = {}  # pod -> [(state, at_ms)], oldest pod first
        for collector in (self.first_answer, self.request, self.pod_start, self.snapshot, self.fleet,
                          self.async_queue):
            self.registry.register(collector)

    def count_call(self, fn: str, edge: str, status: int) -> None:
        # A plain dict on the hot path: a prometheus Counter takes a lock on every increment, and
        # the gateway counts from its one event-loop thread.
        # A 401 or 404 names a function nobody has shown to exist: under its own name, every
        # junk name a caller sends would be a series kept for good (the fuzzer grew the gateway
        # by 3 KiB a call that way).
        key = ("-" if status in UNATTRIBUTED else fn, edge, status)
        self.calls[key] = self.calls.get(key, 0) + 1

    def observe_call(self, fn: str, start: str, first_answer_s: float, whole_s: float | None) -> None:
        """A call answered; `whole_s` None: its answer is still streaming (see `observe_done`)."""
        self.first_answer.observe((fn, start), first_answer_s)
        self.recent.append((time(), fn, start, first_answer_s))
        if whole_s is not None:
            self.request.observe((fn,), whole_s)

    def observe_done(self, fn: str, whole_s: float) -> None:
        self.request.observe((fn,), whole_s)

    def observe_pod_state(self, pod: str, state: str, at_ms: int) -> None:
        """A pod's state change (from its pod.state event). A repeated state is kept once."""
        states = self.pod_states.pop(pod, [])
        if not states or states[-1][0] != state:
            states.append((state, at_ms))
        self.pod_states[pod] = states[-POD_STATES_KEPT:]
        if len(self.pod_states) > RECENT_PODS:
            del self.pod_states[next(iter(self.pod_states))]

    def observe_pod_start(self, fn: str, start: str, seconds: float) -> None:
        self.pod_start.observe((fn, start), seconds)

    def observe_fleet(self, pods: list, nodes: list, fns: set[str]) -> None:
        """Pods by state (every live state, 0 included, for each of `fns`) and per-GPU vRAM, as
        of this scrape."""
        counts = {(fn, state): 0 for fn in fns for state in LIVE_POD_STATES}
        for pod in pods:
            key = (pod.fn, pod.state.value)
            if key in counts:
                counts[key] += 1
        self.fleet.pods = counts
        self.fleet.gpus = [(n.name, g.index, g.model, g.vram_mib, g.vram_reserved_mib) for n in nodes for g in n.gpus]

    def observe_async_queue(self, queued: dict[str, int] | None, fns: set[str]) -> None:
        """Async calls not yet final per function, 0 included, for each of `fns`; None: the
        queue could not be read, so no samples rather than a made-up 0."""
        self.async_queue.queued = None if queued is None else {fn: queued.get(fn, 0) for fn in fns}

    def observe_pools(self, pools: dict) -> None:
        for fn, pool in pools.items():
            self.waiting.labels(fn).set(len(pool.waiters))
            self.slots.labels(fn).set(len(pool.held))

    def observe_health(self, nodes: dict[str, bool], fns: dict[str, bool]) -> None:
        """Degraded or not, per node and per function, as of this scrape (replaces the last)."""
        self.health.nodes, self.health.fns = dict(nodes), dict(fns)

    def render(self, fns: set[str]) -> tuple[bytes, str]:
        """The text exposition, with only the samples of `fns` (a tenant sees its own functions)."""
        return generate_latest(_OnlyFunctions(self.registry, fns)), CONTENT_TYPE_LATEST


class _CallCounts:
    """Exposes the call counts as the counter `thaw_gateway_calls_total`."""

    def __init__(self, counts: dict[tuple[str, str, int], int]):
        self._counts = counts

    def collect(self):
        family = CounterMetricFamily("thaw_gateway_calls", "Invocations answered, by function, edge and status",
                                     labels=["fn", "edge", "status"])
        for (fn, edge, status), n in list(self._counts.items()):
            family.add_metric([fn, edge, str(status)], n)
        yield family


class _Histogram:
    """A histogram per label tuple, kept as plain counts: observed from the gateway's one event-loop
    thread, where a prometheus Histogram's lock per observation buys nothing."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]):
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self.series: dict[tuple[str, ...], list[float]] = {}  # labels -> [per-bucket counts..., +Inf, sum]

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def collect(self):
        family = HistogramMetricFamily(self.name, self.doc, labels=list(self.labels))
        for labels, row in sorted(self.series.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip((*map(str, self.buckets), "+Inf"), row[:-1]):
                cumulative += n
                buckets.append((bound, cumulative))
            family.add_metric(list(labels), buckets, sum_value=row[-1])
        yield family


class _Fleet:
    """Pods by state and per-GPU vRAM, as last observed."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], int] = {}
        self.gpus: list[tuple[str, int, str, int, int]] = []

    def collect(self):
        pods = GaugeMetricFamily("thaw_pods", "Live pods by function and state", labels=["fn", "state"])
        for (fn, state), n in sorted(self.pods.items()):
            pods.add_metric([fn, state], n)
        total = GaugeMetricFamily("thaw_gpu_vram_mib", "A GPU's memory", labels=["node", "gpu", "model"])
        reserved = GaugeMetricFamily("thaw_gpu_vram_reserved_mib", "A GPU's memory reserved by the pods placed "
                                     "on it (their vRAM shares)", labels=["node", "gpu", "model"])
        for node, index, model, vram, used in self.gpus:
            total.add_metric([node, str(index), model], vram)
            reserved.add_metric([node, str(index), model], used)
        yield pods
        yield total
        yield reserved


class _AsyncQueue:
    """Exposes `thaw_async_queued_calls{fn}` as last observed."""

    def __init__(self) -> None:
        self.queued: dict[str, int] | None = None

    def collect(self):
        family = GaugeMetricFamily("thaw_async_queued_calls", "Async calls in the INFER_ASYNC work queue not yet "
                                   "final: waiting for a gateway, running, or waiting to be retried", labels=["fn"])
        for fn, n in sorted((self.queued or {}).items()):
            family.add_metric([fn], n)
        yield family


class _Health:
    """Exposes `thaw_node_degraded{node}` and `thaw_function_degraded{fn}` as last observed."""

    def __init__(self) -> None:
        self.nodes: dict[str, bool] = {}
        self.fns: dict[str, bool] = {}

    def collect(self):
        nodes = GaugeMetricFamily("thaw_node_degraded", "1 while the node reports itself degraded "
                                  "(e.g. its snapshotter does not answer), else 0", labels=["node"])
        for node, degraded in sorted(self.nodes.items()):
            nodes.add_metric([node], int(degraded))
        fns = GaugeMetricFamily("thaw_function_degraded", "1 while the function is in a crash loop, or "
                                "snapshots and a live node is degraded (its pods there cold-start), else 0", labels=["fn"])
        for fn, degraded in sorted(self.fns.items()):
            fns.add_metric([fn], int(degraded))
        yield nodes
        yield fns


class _OnlyFunctions:
    """A collector view of `registry` keeping samples whose `fn` label is in `fns`, and samples
    with no `fn` label (node-level ones: node names are no tenant's data, GET /v1/nodes lists them)."""

    def __init__(self, registry: CollectorRegistry, fns: set[str]):
        self._registry, self._fns = registry, fns

    def collect(self):
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if "fn" not in s.labels or s.labels["fn"] in self._fns]
            yield family
