"""Call counts keep one series per real function: junk names cannot grow the gateway."""

from gateway.metrics import GatewayMetrics


def test_calls_for_unknown_or_unauthenticated_functions_share_one_series():
    m = GatewayMetrics()
    for i in range(1000):
        m.count_call(f"no-such-fn-{i}", "http", 404)
        m.count_call(f"guess-{i}", "nats", 401)
    m.count_call("echo", "http", 200)
    assert m.calls == {("-", "http", 404): 1000, ("-", "nats", 401): 1000, ("echo", "http", 200): 1}
