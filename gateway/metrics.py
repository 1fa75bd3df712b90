"""Gateway metrics in the Prometheus text format, on GET /metrics."""

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("thaw_gateway_calls", "Invocations answered, by function, edge and status",
                             ["fn", "edge", "status"], registry=self.registry)
        self.waiting = Gauge("thaw_gateway_waiting_calls", "Calls waiting for a worker slot", ["fn"],
                             registry=self.registry)
        self._children: dict[tuple[str, str, int], object] = {}
        self.slots = Gauge("thaw_gateway_leased_slots", "Worker slots this gateway holds", ["fn"],
                           registry=self.registry)

    def count_call(self, fn: str, edge: str, status: int) -> None:
        key = (fn, edge, status)
        child = self._children.get(key)
        if child is None:  # labels() is a locked dict lookup; cache the child on the hot path
            child = self._children[key] = self.calls.labels(fn, edge, str(status))
        child.inc()

    def observe_pools(self, pools: dict) -> None:
        for fn, pool in pools.items():
            self.waiting.labels(fn).set(len(pool.waiters))
            self.slots.labels(fn).set(len(pool.held))

    def render(self, fns: set[str]) -> tuple[bytes, str]:
        """The text exposition, with only the samples of `fns` (a tenant sees its own functions)."""
        return generate_latest(_OnlyFunctions(self.registry, fns)), CONTENT_TYPE_LATEST


class _OnlyFunctions:
    """A collector view of `registry` keeping samples whose `fn` label is in `fns`."""

    def __init__(self, registry: CollectorRegistry, fns: set[str]):
        self._registry, self._fns = registry, fns

    def collect(self):
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if s.labels.get("fn") in self._fns]
            yield family
