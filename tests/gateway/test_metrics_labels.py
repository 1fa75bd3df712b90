"""Call counts keep one series per real function: junk names cannot grow the gateway; latency
histograms count each call once; the Grafana dashboard queries only metrics that exist."""

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics


def test_calls_for_unknown_or_unauthenticated_functions_share_one_series():
    m = GatewayMetrics()
    for i in range(1000):
        m.count_call(f"no-such-fn-{i}", "http", 404)
        m.count_call(f"guess-{i}", "nats", 401)
    m.count_call("echo", "http", 200)
    assert m.calls == {("-", "http", 404): 1000, ("-", "nats", 401): 1000, ("echo", "http", 200): 1}


def test_latency_histograms_count_each_call_in_its_bucket_and_show_only_the_tenants_functions():
    m = GatewayMetrics()
    for seconds in (0.004, 0.005, 0.3):
        m.observe_call("echo", "warm", seconds, seconds)
    m.observe_call("echo", "restored", 0.2, None)  # still streaming
    m.observe_done("echo", 2.0)
    m.observe_call("other", "cold", 200.0, 200.0)
    families = {f.name: f for f in text_string_to_metric_families(m.render({"echo"})[0].decode())}
    first = families["thaw_gateway_first_answer_seconds"].samples
    warm = {s.labels["le"]: s.value for s in first if s.name.endswith("_bucket") and s.labels["start"] == "warm"}
    assert (warm["0.005"], warm["0.25"], warm["0.5"], warm["+Inf"]) == (2, 2, 3, 3), "le is inclusive"
    assert {s.labels["start"] for s in first} == {"warm", "restored"}, "no series of another tenant's function"
    whole = {s.name: s.value for s in families["thaw_gateway_request_seconds"].samples if "le" not in s.labels}
    assert whole == {"thaw_gateway_request_seconds_count": 4, "thaw_gateway_request_seconds_sum": 2.309}


def test_every_metric_the_grafana_dashboard_queries_is_one_the_gateway_exposes():
    dashboard = json.loads((Path(__file__).parents[2] / "infra/grafana/thaw-dashboard.json").read_text())
    exposed = {family.name for family in GatewayMetrics().registry.collect()}
    queried = {re.sub(r"_(bucket|sum|count|total)$", "", name)
               for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bthaw_[a-z_]+", target["expr"])}
    assert queried and queried <= exposed, queried - exposed
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
