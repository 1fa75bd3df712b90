"""Gateway metrics in the Prometheus text format, on GET /metrics.

`thaw_node_degraded{node}` and `thaw_function_degraded{fn}` (1 or 0) are computed from Redis on
each scrape (`observe_health`, just before `render`), so a node or function that is gone is
gone from the next scrape too, with no refresh task to keep.
"""

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST


UNATTRIBUTED = frozenset({401, 404})


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

    def count_call(self, fn: str, edge: str, status: int) -> None:
        # A plain dict on the hot path: a prometheus Counter takes a lock on every increment, and
        # the gateway counts from its one event-loop thread.
        # A 401 or 404 names a function nobody has shown to exist: under its own name, every
        # junk name a caller sends would be a series kept for good (the fuzzer grew the gateway
        # by 3 KiB a call that way).
        key = ("-" if status in UNATTRIBUTED else fn, edge, status)
        self.calls[key] = self.calls.get(key, 0) + 1

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
