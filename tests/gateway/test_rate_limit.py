"""A key's request rate: a token bucket per key, in each gateway."""

import pytest

from gateway.rate_limit import KeyRates


def test_a_key_may_burst_its_rate_then_waits_for_tokens():
    rates = KeyRates()
    assert [rates.wait_s("k", 5, 100.0) for _ in range(5)] == [0.0] * 5
    assert rates.wait_s("k", 5, 100.0) == pytest.approx(0.2)
    assert rates.wait_s("k", 5, 100.2) == 0.0, "a token came back after 1/rate seconds"
    assert rates.wait_s("other", 5, 100.2) == 0.0, "keys do not share a bucket"


def test_a_rate_of_zero_is_unlimited():
    rates = KeyRates()
    assert all(rates.wait_s("k", 0, 1.0) == 0.0 for _ in range(10_000))


def test_a_flood_of_keys_costs_no_memory_past_the_bound():
    rates = KeyRates(max_keys=100)
    for i in range(1000):
        rates.wait_s(f"k{i}", 1, 0.0)
    assert len(rates._buckets) <= 100
