"""The vRAM share, enforced: a worker using more GPU memory than its pod reserved is stopped.

Placement packs workers onto a GPU by the shares they declare (`resources.vram_mib`); nothing
in CUDA holds a process to that. So each health tick the agent reads per-process GPU memory
and fails a pod whose processes use more than its share on any of its GPUs, with the numbers
in the pod's events and its failure reason, before it starves the pods packed beside it.

Per-process memory comes from NVML where the node has NVIDIA GPUs (`NvmlMeter`). With mock
GPUs, `MockMeter` is the stand-in inventory: a worker states its use by writing MiB to
`/tmp/thaw-mock-vram-mib` in its sandbox (read through /proc/<pid>/root), so the same path,
from reading to the failed pod, is tested without a GPU. A pod's processes are its cgroup's
(thaw_core/sandbox), so helpers a worker forks are counted too.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from thaw_core.clock import now_ms
from thaw_core.store import events

log = logging.getLogger(__name__)
MOCK_USAGE_FILE = "tmp/thaw-mock-vram-mib"
Usage = dict[tuple[int, int], int]  # (GPU index, host pid) -> MiB


@dataclass(frozen=True, slots=True)
class Share:
    """What one pod may use: `vram_mib` on each of `gpus`, by any of `pids`."""

    pod: str
    fn: str
    gpus: tuple[int, ...]
    vram_mib: int
    pids: frozenset[int]


@dataclass(frozen=True, slots=True)
class Overuse:
    pod: str
    fn: str
    gpu: int
    used_mib: int
    share_mib: int

    def reason(self) -> str:
        return (f"used {self.used_mib} MiB of GPU {self.gpu}, over its share of {self.share_mib} MiB "
                "(resources.vram_mib): stopped so the pods sharing the GPU keep theirs")


def overuses(shares: list[Share], usage: Usage) -> list[Overuse]:
    """Every pod over its share on one of its GPUs (its use elsewhere counts on that GPU too:
    a worker on a GPU it was not given is over a share of 0)."""
    found = []
    for s in shares:
        per_gpu: dict[int, int] = {}
        for (gpu, pid), mib in usage.items():
            if pid in s.pids:
                per_gpu[gpu] = per_gpu.get(gpu, 0) + mib
        for gpu, used in sorted(per_gpu.items()):
            share = s.vram_mib if gpu in s.gpus else 0
            if used > share:
                found.append(Overuse(s.pod, s.fn, gpu, used, share))
                break
    return found


class NvmlMeter:
    """Per-process GPU memory from the NVIDIA driver."""

    def usage(self, shares: list[Share]) -> Usage:
        import pynvml

        out: Usage = {}
        pynvml.nvmlInit()
        try:
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                for proc in (*pynvml.nvmlDeviceGetComputeRunningProcesses(handle),
                             *pynvml.nvmlDeviceGetGraphicsRunningProcesses(handle)):
                    used = proc.usedGpuMemory
                    if used is not None:  # None: the driver hides it (no permission)
                        out[(index, proc.pid)] = out.get((index, proc.pid), 0) + used // (1 << 20)
        finally:
            pynvml.nvmlShutdown()
        return out


class MockMeter:
    """The stand-in inventory: what each worker says it uses, on its pod's first GPU."""

    def usage(self, shares: list[Share]) -> Usage:
        out: Usage = {}
        for s in shares:
            for pid in sorted(s.pids):  # the pod's processes share one /tmp: its first statement counts
                try:
                    mib = int(Path(f"/proc/{pid}/root", MOCK_USAGE_FILE).read_text().strip() or 0)
                except (OSError, ValueError):
                    continue
                if mib and s.gpus:
                    out[(s.gpus[0], pid)] = mib
                break
        return out


class VramWatch:
    def __init__(self, meter, r: Redis):
        self._meter, self._r = meter, r

    async def over(self, shares: list[Share]) -> list[Overuse]:
        """The pods over their share now, each noted in its events."""
        if not shares:
            return []
        try:
            found = overuses(shares, self._meter.usage(shares))
        except Exception as exc:  # a driver hiccup must not stop the health checks
            log.warning("could not read per-process GPU memory: %s", exc)
            return []
        for o in found:
            await events.record(self._r, o.pod, "vram_exceeded", o.reason(), now_ms())
        return found
