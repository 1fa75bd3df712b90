"""The live dashboard: `GET /dashboard`, one self-contained page (gateway/dashboard.html: no
external resource, no build step), and `GET /v1/dashboard`, the JSON document it polls about once
a second with an admin key of the tenant it shows.

The document holds, for the caller's tenant only, what the listings hold (the same helpers of
HttpApi compute both): functions with their status, live pods and recent failures, nodes with
per-GPU vRAM, snapshots and dead async calls. And what this gateway saw (GatewayMetrics): each
pod's `states`, the [state, at_ms] it went through as its events told (a start can take less
than a poll), and the last answered calls, each timed to its first answer and labelled warm,
restored or cold. With several gateways, each shows the calls it answered itself.
"""

from pathlib import Path

from bus_schemas.codec import encode
from thaw_core.clock import now_ms

from gateway.calls_api import dead_row
from gateway.metrics import GatewayMetrics
from gateway.ttl_cache import TtlCache

PAGE = (Path(__file__).parent / "dashboard.html").read_bytes()
# The page loads nothing from elsewhere and may talk only to this gateway; no framing, no referrer.
PAGE_HEADERS = [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"),
                ("content-security-policy", "default-src 'none'; script-src 'unsafe-inline'; "
                 "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'"),
                ("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer")]
JSON_HEADERS = [("content-type", "application/json"), ("cache-control", "no-store")]
# Reading the DLQ scans a JetStream stream through a consumer made for the read: once per tenant
# this often, however many dashboards poll.
DLQ_EVERY_S = 5.0


class Dashboard:
    def __init__(self, api):
        """`api`: the gateway's HttpApi, whose listing helpers and stores this reads."""
        self._api = api
        self._dead = TtlCache(self._read_dead, lambda _: DLQ_EVERY_S, max_entries=1_000)

    async def page(self, request) -> tuple[int, list[tuple[str, str]], bytes]:
        return 200, PAGE_HEADERS, PAGE

    async def state(self, request) -> tuple[int, list[tuple[str, str]], bytes]:
        """The document for the caller's tenant; 401 without a key, 403 for an invoker key."""
        api = self._api
        tenant = await api.keys.admin_tenant(request.headers.get("authorization"), "the dashboard")
        specs = await api.specs_of(tenant)
        mine = {s.name for s in specs}
        nodes = await api.nodes.all()
        pods = await api.pod_rows(mine)
        for row in pods["pods"] + pods["failed"]:
            row["states"] = api.metrics.pod_states.get(row["pod"], [])
        doc = {"tenant": tenant, "at_ms": now_ms(), "functions": await api.function_rows(specs, nodes),
               **pods, "nodes": api.node_rows(nodes, await api.pods_per_node()),
               "latencies": recent_calls(api.metrics, mine), "snapshots": await api.snapshot_rows(mine),
               "dead": await self._dead.get(tenant) if api.calls is not None else [],
               "dlq_served": api.calls is not None}
        return 200, JSON_HEADERS, encode(doc)

    async def _read_dead(self, tenant: str) -> list[dict]:
        return [dead_row(letter) for letter in await self._api.calls.store.dead(tenant)]


def recent_calls(metrics: GatewayMetrics, fns: set[str]) -> list[dict]:
    """This gateway's last answered calls of `fns`, oldest first: when (wall-clock ms), which
    function, what the call waited for (warm, restored, cold), seconds to its first answer."""
    return [{"at_ms": int(at_s * 1000), "fn": fn, "start": start, "seconds": round(seconds, 6)}
            for at_s, fn, start, seconds in list(metrics.recent) if fn in fns]
