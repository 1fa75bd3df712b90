"""Gateway metrics in the Prometheus text format, on GET /metrics."""

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls: dict[tuple[str, str, int], int] = {}
        self.registry.register(_CallCounts(self.calls))
        self.waiting = Gauge("thaw_gateway_waiting_calls", "Calls waiting for a worker slot", ["fn"],
                             registry=self.registry)
        self.slots = Gauge("thaw_gateway_leased_slots", "Worker slots this gateway holds", ["fn"],
                           registry=self.registry)

    def count_call(self, fn: str, edge: str, status: int) -> None:
        # A plain dict on the hot path: a prometheus Counter takes a lock on every increment, and
        # the gateway counts from its one event-loop thread.
        key = (fn, edge, status)
        self.calls[key] = self.calls.get(key, 0) + 1

    def observe_pools(self, pools: dict) -> None:
        for fn, pool in pools.items():
            self.waiting.labels(fn).set(len(pool.waiters))
            self.slots.labels(fn).set(len(pool.held))

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


class _OnlyFunctions:
    """A collector view of `registry` keeping samples whose `fn` label is in `fns`."""

    def __init__(self, registry: CollectorRegistry, fns: set[str]):
        self._registry, self._fns = registry, fns

    def collect(self):
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if s.labels.get("fn") in self._fns]
            yield family
