"""Per-key request rates: a token bucket per API key, in this gateway process.

A key made with a rate (`thaw keys --rate N`, or POST /v1/keys {"rate_per_s": N}) may make N
calls a second through each gateway, in bursts of up to N; past that a call gets 429 with
Retry-After. Kept in process so the warm path pays a dict lookup, not a Redis round trip: with
G gateways a key's ceiling is G x N, which is what an operator sizing a rate should assume.
"""


class KeyRates:
    def __init__(self, max_keys: int = 100_000):
        # key (the Authorization header as sent) -> [tokens, loop time of the last refill]
        self._buckets: dict[str | None, list[float]] = {}
        self._max_keys = max_keys

    def wait_s(self, key: str | None, rate_per_s: float, now_s: float) -> float:
        """Take one call from `key`'s bucket: 0.0 when it may go now, else the seconds until it
        could. A rate of 0 means unlimited."""
        if rate_per_s <= 0:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # a flood of keys costs them a fresh burst, never memory
            bucket = self._buckets[key] = [rate_per_s, now_s]
        tokens = min(rate_per_s, bucket[0] + (now_s - bucket[1]) * rate_per_s)
        bucket[1] = now_s
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / rate_per_s
