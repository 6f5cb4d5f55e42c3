"""An attempt called off by its stop or by the client leaving (failover._until_stopped), run in the attempt's own
task: no task of its own, a stop's reason as the outcome, and anyone else's cancellation passed on."""

from __future__ import annotations

import asyncio

import pytest

from addon.failover import CLIENT_GONE, _until_stopped
from addon.hedging import Race, Stop


async def _parked(started: asyncio.Event, tasks: list[int]) -> str:
    tasks.append(len(asyncio.all_tasks()))
    started.set()
    await asyncio.Event().wait()
    return "never"


def test_an_attempt_makes_no_task_beside_the_races() -> None:
    async def run() -> list[int]:
        started, tasks = asyncio.Event(), []
        race: Race[str, object] = Race(None)
        race.start("a", lambda stop: _until_stopped(_parked(started, tasks), lambda: False, stop))
        await started.wait()
        await race.call_off("enough")
        return tasks

    assert asyncio.run(run()) == [2]  # the test's own task and the race's


def test_a_stop_calls_the_attempt_off_with_its_reason() -> None:
    async def run() -> object:
        started, stop = asyncio.Event(), Stop()
        task = asyncio.ensure_future(_until_stopped(_parked(started, []), None, stop))
        await started.wait()
        stop.set("hedge lost to b")
        return await asyncio.wait_for(task, 30)

    assert asyncio.run(run()) == "hedge lost to b"


def test_a_client_that_left_calls_the_attempt_off() -> None:
    async def run() -> object:
        started = asyncio.Event()
        return await asyncio.wait_for(_until_stopped(_parked(started, []), started.is_set, Stop()), 30)

    assert asyncio.run(run()) == CLIENT_GONE


def test_anyone_elses_cancellation_goes_on_even_after_a_stop() -> None:
    async def run() -> None:
        started, stop = asyncio.Event(), Stop()
        task = asyncio.ensure_future(_until_stopped(_parked(started, []), None, stop))
        await started.wait()
        stop.set("called off")
        task.cancel()
        await asyncio.wait_for(task, 30)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run())


def test_a_finished_attempt_is_its_outcome() -> None:
    async def done() -> str:
        await asyncio.sleep(0)
        return "record"

    assert asyncio.run(_until_stopped(done(), lambda: False, Stop())) == "record"
