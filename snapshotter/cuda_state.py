"""Move a GPU worker's CUDA state off its device and back, around a CRIU dump or after a restore.

NVIDIA's `cuda-checkpoint` utility does the moving, one process at a time, by pid (the pid as
this node's PID namespace sees it; for a worker that is PID 1 of its own namespace that is the
host-side pid the process runtime records in the pod's runtime_ref):

- ``cuda-checkpoint --get-state --pid P`` prints the process's CUDA state: ``running``,
  ``locked``, ``checkpointed`` or ``failed``;
- ``cuda-checkpoint --toggle --pid P`` switches between running and checkpointed. Running to
  checkpointed waits for submitted GPU work, copies device memory into host memory and releases
  the GPU, so CRIU can dump the process like any other; checkpointed to running re-acquires the
  GPU and copies the memory back;
- ``cuda-checkpoint --action unlock --pid P`` (driver 570+) releases a process left locked.

The snapshotter's order for a dump is: suspend (toggle to checkpointed), ``criu dump
--leave-running``, resume (toggle back) so the original keeps serving on its GPU. A restored
process comes back checkpointed and is resumed before the restore is answered. Every toggle is
followed by ``--get-state`` to check that it did what it said; a state that is already the
wanted one is left alone (CRIU's own ``cuda_plugin``, when installed, may have resumed a restored
process already).

NVIDIA documents that cuda-checkpoint "does not attempt to keep the process in a good state if
an error is encountered", so after a failed suspend this module tries to bring the worker back
to running, and says in the error whether that worked.

Not proven on a device in this repository: no GPU was available. The tests drive a stand-in
executable that only records its arguments (tests/snapshots/test_gpu_checkpoint.py).
"""

from dataclasses import dataclass

from thaw_core import spawn

from snapshotter.errors import CudaCheckpointFailed

RUNNING, LOCKED, CHECKPOINTED = "running", "locked", "checkpointed"


@dataclass(frozen=True, slots=True)
class CudaCheckpoint:
    """The cuda-checkpoint binary of this node (gpu_support.detect found it usable)."""

    binary: str
    timeout_s: float = 300.0  # a toggle waits for the worker's submitted GPU work to finish

    async def state(self, pid: int) -> str:
        out = await self._run("--get-state", "--pid", str(pid))
        return out.strip().lower()

    async def suspend(self, pid: int) -> None:
        """running -> checkpointed: device memory now lives in the process's host memory.

        Raises CudaCheckpointFailed when the process is not running on the GPU to begin with
        (it is not touched then) or the toggle fails; in the latter case the worker has been
        brought back to running where that was possible, and the error says which."""
        before = await self.state(pid)
        if before != RUNNING:
            raise CudaCheckpointFailed("cuda-checkpoint", f"pid {pid}'s CUDA state is {before!r}, "
                                       f"not {RUNNING!r}; left as it is")
        try:
            await self._run("--toggle", "--pid", str(pid))
            await self._expect(pid, CHECKPOINTED)
        except CudaCheckpointFailed as exc:
            exc.why += await self._recover(pid)
            raise

    async def resume(self, pid: int, attempts: int = 1) -> None:
        """checkpointed -> running: the process owns its GPU memory again. Nothing to do when it
        is running already. Tries `attempts` times; raises CudaCheckpointFailed."""
        for attempt in range(1, attempts + 1):
            try:
                if await self.state(pid) == RUNNING:
                    return
                await self._run("--toggle", "--pid", str(pid))
                await self._expect(pid, RUNNING)
                return
            except CudaCheckpointFailed:
                if attempt == attempts:
                    raise

    async def _expect(self, pid: int, wanted: str) -> None:
        now = await self.state(pid)
        if now != wanted:
            raise CudaCheckpointFailed("cuda-checkpoint", f"pid {pid}'s CUDA state is {now!r} after the "
                                       f"toggle, expected {wanted!r}")

    async def _recover(self, pid: int) -> str:
        """After a failed suspend: back to running if at all possible. Returns what happened,
        appended to the error."""
        try:
            now = await self.state(pid)
            if now in (LOCKED, CHECKPOINTED):
                await self._run(*(("--action", "unlock") if now == LOCKED else ("--toggle",)), "--pid", str(pid))
                now = await self.state(pid)
        except CudaCheckpointFailed as exc:
            return f"; could not bring it back to running ({exc.why}): the worker cannot use its GPU"
        if now == RUNNING:
            return "; the worker is running on its GPU again"
        return f"; the worker is left {now!r} and cannot use its GPU"

    async def _run(self, *args: str) -> str:
        argv = (self.binary, *args)
        try:
            done = await spawn.run(argv, timeout_s=self.timeout_s)
        except OSError as exc:
            raise CudaCheckpointFailed("cuda-checkpoint", f"cannot run {self.binary}: {exc}") from None
        except TimeoutError:
            raise CudaCheckpointFailed("cuda-checkpoint", f"`{' '.join(args)}` did not finish within "
                                       f"{self.timeout_s:g}s (killed)") from None
        if done.returncode:
            raise CudaCheckpointFailed("cuda-checkpoint", f"`{' '.join(args)}` failed",
                                       exit_code=done.returncode, log_tail=done.output.strip()[-500:])
        return done.output
