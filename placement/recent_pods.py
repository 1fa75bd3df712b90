"""The pods this worker committed while a lease request's read of the store was under way.

A lease request reads its function's spec and live pods before it takes the worker's placement
lock, so that the next request's round trips overlap the current one's placement instead of
queueing behind it. A pod this worker committed for the same function after that read began may
be missing from it; `since` gives those back, so the request counts them as starting pods, as
it would have had it read under the lock (placement/scaling.py: a burst of requests starts no
more pods than it needs). Pods of other workers are not here: those race as they always did,
and the ledger's max_pods holds for them.

Entries are kept only while some read that began before them is still open.
"""

from collections import Counter, deque

from bus_schemas.pods import PodState
from thaw_core.store.pods import PodRecord


class RecentPods:
    def __init__(self) -> None:
        self._seq = 0  # commits so far
        self._log: deque[tuple[int, PodRecord]] = deque()  # (commit number, the pod), oldest first
        self._open: Counter[int] = Counter()  # commit number when a read began -> reads open since

    def open_read(self) -> int:
        """A read begins; returns its mark for `since` and `close_read`."""
        self._open[self._seq] += 1
        return self._seq

    def close_read(self, mark: int) -> None:
        self._open[mark] -= 1
        if self._open[mark] <= 0:
            del self._open[mark]
        oldest = min(self._open, default=self._seq)
        while self._log and self._log[0][0] <= oldest:
            self._log.popleft()

    def committed(self, pod: str, fn: str, node: str, at_ms: int) -> None:
        """A pod of `fn` this worker just committed (it starts out pending)."""
        self._seq += 1
        if self._open:
            self._log.append((self._seq, PodRecord(pod=pod, fn=fn, node=node, state=PodState.PENDING,
                                                   state_at_ms=at_ms, created_ms=at_ms)))

    def forget(self, pod: str) -> None:
        """A pod `committed` counted before its commit that the ledger then refused."""
        self._log = deque((seq, p) for seq, p in self._log if p.pod != pod)

    def since(self, mark: int, fn: str, read: list[PodRecord]) -> list[PodRecord]:
        """`read` (the pods of `fn` a read begun at `mark` found) and the pods of `fn` committed
        since that the read may have missed."""
        found = {p.pod for p in read}
        return read + [p for seq, p in self._log if seq > mark and p.fn == fn and p.pod not in found]
