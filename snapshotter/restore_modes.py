"""Eager or lazy: how one restore brings a worker's memory back (the function's `restore`).

- "eager": CRIU writes every page before the worker runs;
- "lazy": the worker runs at once and CRIU's lazy-pages daemon brings the pages in, on fault
  and in the background (snapshotter/lazy_pages.py);
- "auto": lazy for images with at least `AUTO_LAZY_MIN_BYTES` of memory pages, eager below,
  and eager for a snapshot whose last lazy restore had its worker fault in at least
  `EAGER_DEMAND_SHARE` of the pages itself before the daemon had copied them in.

Why, from bench/restore_sizes.py (2026-12-04, README "Lazy restores"): for a worker that
touches a little per request, lazy answers first in ~0.08 s whatever the image's size (64 MiB
to 2 GiB), while eager grows with it (0.07 to 1.9 s). For one that reads all of its memory on
its first request it depends on who wins the race between its reads and the daemon's copying:
at 1-2 GiB the daemon copies most pages before the worker reaches them, and lazy answered in
0.5-0.7x of eager's time; at 256 MiB the worker outran the daemon, faulted 8-10% of its pages
in itself, one round trip through the daemon each, and the two tied or eager won (1.13x). The
share of pages faulted on demand is what tells those apart, and it is measured on every lazy
restore. Below 128 MiB the two are within a few hundredths of a second either way, and eager
needs no daemon that can fail.

GPU memory: `cuda-checkpoint --toggle` moves a worker's device memory into host memory before a
dump, so it lies in the image as ordinary pages, and the toggle after a restore copies all of
it back onto the device before the worker answers: it reads every one of those pages at once,
from inside the driver, which should not wait on a page-fault daemon. Untried here (no GPU),
so `auto` restores a GPU snapshot eagerly; "lazy" still does as asked (the daemon then serves
the toggle's reads).

Lazy gives way to eager where it cannot run (`lazy_pages.unavailable_reason`) and for a
snapshot whose lazy daemon died before (once is enough to stop trusting it on this node).
"""

from pathlib import Path

AUTO_LAZY_MIN_BYTES = 128 << 20
EAGER_DEMAND_SHARE = 0.05
"""Share of an image's pages faulted in on demand above which auto restores it eagerly: a
worker answering small requests faults in at most ~3% (0.1-0.3% at 1-2 GiB), one that read all
of a 256 MiB heap at once 8-10%, the case eager answers as fast or faster."""
PAGE = 4096


def memory_bytes(image_dir: Path) -> int:
    """Bytes of memory pages in a CRIU image (what an eager restore writes before running)."""
    return sum(p.stat().st_size for p in image_dir.glob("pages-*.img"))


def demand_share(faults: int, memory: int) -> float:
    """Share of an image's pages its worker faulted in itself during a lazy restore."""
    return min(1.0, faults / max(1, memory // PAGE))


def choose(mode: str, memory: int, unavailable: str, failed_before: bool,
           demand: float | None = None, gpu: bool = False) -> tuple[bool, str]:
    """(lazy?, how) for a restore asked to be `mode` of an image with `memory` bytes of pages;
    `demand`: the share of pages its last lazy restore faulted in on demand (None: none yet).
    `how` says what was done and, when it is not what was asked, why."""
    if mode == "eager":
        return False, "eager"
    if mode == "auto" and memory < AUTO_LAZY_MIN_BYTES:
        return False, f"eager (auto: {memory >> 20} MiB of pages, under {AUTO_LAZY_MIN_BYTES >> 20} MiB)"
    if mode == "auto" and gpu:
        return False, "eager (auto: a GPU snapshot, whose device memory is copied back in whole)"
    if mode == "auto" and demand is not None and demand >= EAGER_DEMAND_SHARE:
        return False, f"eager (auto: its last lazy restore faulted in {demand:.0%} of the pages on demand)"
    if failed_before:
        return False, "eager (a lazy restore of this snapshot failed on this node)"
    if unavailable:
        return False, f"eager ({unavailable})"
    return True, "lazy" if mode == "lazy" else f"lazy (auto: {memory >> 20} MiB of pages)"
