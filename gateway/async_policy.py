"""What an async call's attempt means: done, failed for good, tried again later, or dead. Pure:
no I/O, so the rules read (and are tested) on their own."""

from dataclasses import dataclass
from typing import Literal

from bus_schemas.functions import AsyncPolicy

RETRYABLE_GATEWAY = frozenset({429, 502, 503, 504})  # overloaded, no worker, worker broke or timed out


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Literal["succeeded", "failed", "retry", "dead"]
    delay_s: float = 0.0  # for "retry": when to try again


def backoff_s(policy: AsyncPolicy, attempt: int) -> float:
    """The wait after failed attempt `attempt` (1-based): backoff_s x 2^(attempt-1), capped."""
    return min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1))


def verdict(policy: AsyncPolicy, attempt: int, http_status: int, from_worker: bool) -> Verdict:
    """A worker's 2xx/3xx succeeds and its 4xx fails for good; a worker's 5xx, or the gateway's
    429/502/503/504 (no worker, worker gone, timeout), is retried until `policy.max_attempts`
    attempts, then dead. Any other refusal by the gateway (e.g. 404: the function is gone) fails."""
    if from_worker and http_status < 400:
        return Verdict("succeeded")
    retryable = http_status >= 500 if from_worker else http_status in RETRYABLE_GATEWAY
    if not retryable:
        return Verdict("failed")
    if attempt >= policy.max_attempts:
        return Verdict("dead")
    return Verdict("retry", backoff_s(policy, attempt))
