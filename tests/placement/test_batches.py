"""Calls that arrive while a batch runs wait and go together in the next one
(placement/batches.py), each getting back its own outcome."""

import asyncio

import pytest

from placement.batches import Batches


async def test_calls_made_while_a_batch_runs_go_together_in_the_next_one():
    seen: list[list[int]] = []
    first_running = asyncio.Event()
    let_go = asyncio.Event()

    async def run(items: list[int]) -> list:
        seen.append(items)
        first_running.set()
        await let_go.wait()
        return [i * 10 for i in items]

    batches = Batches(run)
    first = asyncio.create_task(batches.submit(1))
    await first_running.wait()
    rest = [asyncio.create_task(batches.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    let_go.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40]
    assert seen == [[1], [2, 3, 4]]
    assert batches.batches == 2


async def test_each_call_gets_its_own_outcome_and_a_failed_batch_fails_each_call():
    async def run(items: list[str]) -> list:
        if "all" in items:
            raise RuntimeError("the store is gone")
        return [ValueError(i) if i == "bad" else i.upper() for i in items]

    batches = Batches(run)
    good, bad = await asyncio.gather(batches.submit("ok"), batches.submit("bad"), return_exceptions=True)
    assert good == "OK"
    assert isinstance(bad, ValueError)
    failed = await asyncio.gather(batches.submit("all"), batches.submit("x"), return_exceptions=True)
    assert [str(e) for e in failed] == ["the store is gone"] * 2


async def test_a_caller_that_gives_up_leaves_the_others_their_outcomes():
    release = asyncio.Event()

    async def run(items: list[int]) -> list:
        await release.wait()
        return items

    batches = Batches(run)
    impatient = asyncio.create_task(batches.submit(1))
    patient = asyncio.create_task(batches.submit(2))
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert await patient == 2
    with pytest.raises(asyncio.CancelledError):
        await impatient
