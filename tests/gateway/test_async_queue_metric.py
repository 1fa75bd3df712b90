"""`thaw_async_queued_calls{fn}`: the async queue's depth per function, as of the scrape, only
for the scraping tenant's functions, and no made-up number when the queue could not be read."""

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics


def queued_samples(m: GatewayMetrics, fns: set[str]) -> dict[str, float]:
    families = {f.name: f for f in text_string_to_metric_families(m.render(fns)[0].decode())}
    return {s.labels["fn"]: s.value for s in families["thaw_async_queued_calls"].samples}


def test_each_of_the_tenants_functions_has_its_depth_and_an_empty_queue_is_zero():
    m = GatewayMetrics()
    m.observe_async_queue({"a": 3, "b": 1, "someone-elses": 9}, {"a", "b", "c"})
    assert queued_samples(m, {"a", "b", "c"}) == {"a": 3, "b": 1, "c": 0}


def test_a_drained_function_drops_to_zero_and_an_unreadable_queue_shows_nothing():
    m = GatewayMetrics()
    m.observe_async_queue({"a": 3}, {"a"})
    m.observe_async_queue({}, {"a"})
    assert queued_samples(m, {"a"}) == {"a": 0}
    m.observe_async_queue(None, {"a"})
    assert queued_samples(m, {"a"}) == {}
