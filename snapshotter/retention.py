"""Which snapshots of one function to delete, by count and age. Pure: no I/O, no clock."""

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    keep_count: int = 3  # newest N kept; at least 1
    max_age_s: int = 7 * 24 * 3600  # older than this is deleted, except the newest snapshot

    def __post_init__(self) -> None:
        if self.keep_count < 1:
            raise ValueError(f"keep_count must be >= 1, got {self.keep_count}")
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {self.max_age_s}")


def expired(snapshots: Iterable[tuple[str, int]], policy: RetentionPolicy, now_ms: int) -> list[str]:
    """Ids to delete, oldest first, from (id, created_ms) pairs.

    Keeps the newest `keep_count`; of those, drops any older than `max_age_s` — except the
    newest of all, so a function that has not been redeployed for a while still restores fast
    instead of falling back to cold starts. Ties in created_ms break by id, so the answer does
    not depend on input order.
    """
    ordered = sorted(snapshots, key=lambda s: (s[1], s[0]), reverse=True)
    cutoff_ms = now_ms - policy.max_age_s * 1000
    doomed = [sid for i, (sid, created) in enumerate(ordered)
              if i > 0 and (i >= policy.keep_count or created < cutoff_ms)]
    return doomed[::-1]
