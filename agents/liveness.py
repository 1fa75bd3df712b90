"""Is this node's snapshotter alive? Decided from the agent's pings, with no I/O here.

The agent pings `snapshot.ping.<node>` every heartbeat and tells `SnapshotterLiveness` what
came of each ping. One miss (no responders, a timeout, the bus away) changes nothing, so a
snapshotter that restarts in a second or a slow beat does not flap the node; `down_after`
misses in a row mark it down. While it answers, the node offers what its last answer said
(`snapshot_support`); while it is down, nothing. A node that *expects* a snapshotter (`thaw up`
started one) and finds it down is `degraded`, with a reason an operator can act on.
"""

from enum import Enum


class Change(Enum):
    """What a ping's outcome changed; the agent logs each once, not once per beat."""

    DOWN = "down"  # the down_after-th miss in a row
    BACK = "back"  # the first answer after being down
    RESTARTED = "restarted"  # answering, but a different process (another started_ms)


class SnapshotterLiveness:
    def __init__(self, subject: str, down_after: int, expected: bool, now_s: float):
        """`subject` is the ping subject (named in the reason); `now_s` any monotonic clock,
        the same one every later call uses."""
        if down_after < 1:
            raise ValueError(f"down_after must be >= 1 (got {down_after}): consecutive misses before down")
        self.subject, self.down_after, self.expected = subject, down_after, expected
        self.misses = 0
        self.capabilities: tuple[str, ...] = ()
        self.started_ms = 0
        self.reason = ""
        self._silent_since_s = now_s  # the last answer, or the start of watching

    @property
    def down(self) -> bool:
        return self.misses >= self.down_after

    @property
    def snapshot_support(self) -> tuple[str, ...]:
        """What the node offers: the last answer's capabilities, nothing while down."""
        return () if self.down else self.capabilities

    @property
    def degraded(self) -> str:
        """Empty while healthy or when no snapshotter is expected here; else the reason."""
        return self.reason if self.expected and self.down else ""

    def answered(self, capabilities: tuple[str, ...], started_ms: int, now_s: float) -> Change | None:
        was_down, before = self.down, self.started_ms
        self.misses, self.reason, self._silent_since_s = 0, "", now_s
        self.capabilities, self.started_ms = tuple(capabilities), started_ms
        if was_down:
            return Change.BACK
        return Change.RESTARTED if before and started_ms != before else None

    def missed(self, now_s: float) -> Change | None:
        self.misses += 1
        if self.misses != self.down_after:
            return None
        self.reason = (f"snapshotter not answering on {self.subject} for {now_s - self._silent_since_s:.1f}s: "
                       "pods cold-start until it is back")
        return Change.DOWN
