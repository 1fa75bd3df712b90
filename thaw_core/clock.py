"""Wall-clock milliseconds: the unit of every timestamp in Redis and on the bus."""

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
