"""Calls that arrive while a batch is under way wait, and go together in the next batch.

A placement worker's consumer hands it up to a pull's worth of lease requests at once, each as
its own call. Placing them one by one held the placement lock over a store round trip per
pod, and every other task on the loop ran inside that hold, so one worker placed a few hundred
pods a second however idle its CPU (bench/fleet_replay.py). In a batch, the reads of every
request go out together, the decisions follow one another in memory, and the commits go to
the ledger in one round trip.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Outcomes = list  # one per item, in order: its result, or the exception it failed with


class Batches(Generic[T, R]):
    def __init__(self, run: Callable[[list[T]], Awaitable[Outcomes]]):
        self._run = run
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task | None = None
        self.batches = 0  # batches run so far (for tests and the bench)

    async def submit(self, item: T) -> R:
        """`item`'s outcome, once the batch it joined has run (its exception raised here)."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_batches())
        return await done

    async def _run_batches(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            self.batches += 1
            try:
                outcomes = await self._run([item for item, _ in batch])
            except BaseException as exc:  # the whole batch failed (or the runner was cancelled)
                outcomes = [exc] * len(batch)
                if isinstance(exc, asyncio.CancelledError):
                    _settle(batch, outcomes)
                    for _, done in self._waiting:
                        done.cancel()
                    raise
            _settle(batch, outcomes)


def _settle(batch: list[tuple[T, asyncio.Future]], outcomes: Outcomes) -> None:
    for (_, done), outcome in zip(batch, outcomes, strict=True):
        if done.done():  # its caller gave up waiting
            continue
        if isinstance(outcome, asyncio.CancelledError):
            done.cancel()
        elif isinstance(outcome, BaseException):
            done.set_exception(outcome)
        else:
            done.set_result(outcome)
