"""The `thaw snapshots` table: one row per snapshot with size, tiers and age. Pure formatting."""

from collections.abc import Sequence

from thaw_core.store.snapshots import SnapshotRecord

HEADER = ("FUNCTION", "SNAPSHOT", "RUNTIME", "SIZE", "RAW", "TIERS", "NODE", "AGE")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_age(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def rows(snapshots: Sequence[SnapshotRecord], now_ms: int) -> list[tuple[str, ...]]:
    """Rows for `snapshots` in the given order (the index lists newest first per function)."""
    return [(s.fn, s.id, s.runtime, human_bytes(s.size_bytes),
             human_bytes(s.raw_bytes), ",".join(s.tiers) or "-", s.node,
             human_age((now_ms - s.created_ms) / 1000)) for s in snapshots]


def table(snapshots: Sequence[SnapshotRecord], now_ms: int) -> str:
    """A fixed-width text table with a header, or a one-line note when there is nothing."""
    body = rows(snapshots, now_ms)
    if not body:
        return "no snapshots"
    widths = [max(len(r[i]) for r in [HEADER, *body]) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [HEADER, *body])
