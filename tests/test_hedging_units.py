"""The race of a request's attempts (hedging.py), with attempts that are plain coroutines: when a hedge is due, which
attempt finishes first, how the others are called off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from addon.failover import CLIENT_GONE, AttemptRecord, _until_stopped
from addon.hedging import HEDGE_DUE, MAX_IN_FLIGHT, Finished, Race, Solo, Stop, race_for
from addon.relay_handoff import served_comment

# Short, since nothing here asserts on time: a hedge only ever becomes due after it.
SOON = 0.01


def held(release: asyncio.Event, answer: str = "served") -> Callable[[Stop], Awaitable[str]]:
    """An attempt that serves once `release` is set, or says why it stopped when it is called off first."""

    async def attempt(stop: Stop) -> str:
        released = asyncio.ensure_future(release.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({released, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            stopped.cancel()
        return answer if release.is_set() else f"stopped: {stop.reason}"

    return attempt


def at_once(answer: str) -> Callable[[Stop], Awaitable[str]]:
    async def attempt(stop: Stop) -> str:
        return answer

    return attempt


def test_without_hedge_after_the_attempt_is_simply_awaited() -> None:
    async def run() -> Finished[str, str] | object:
        race: Race[str, str] = Race(None)
        release = asyncio.Event()
        race.start("a", held(release))
        asyncio.get_running_loop().call_later(SOON * 5, release.set)
        return await race.next()

    assert asyncio.run(run()) == Finished("a", False, "served")


def test_a_slow_attempt_gets_a_hedge_the_first_to_serve_wins_and_the_other_is_called_off() -> None:
    async def run() -> list[object]:
        race: Race[str, str] = Race(SOON)
        seen: list[object] = []
        race.start("a", held(asyncio.Event()))
        seen.append(await race.next())
        seen.append(race.start("b", at_once("from b")))
        seen.append(await race.next())
        seen.append(await race.call_off("hedge lost to b"))
        seen.append(race.in_flight)
        return seen

    assert asyncio.run(run()) == [
        HEDGE_DUE, True, Finished("b", True, "from b"), [Finished("a", False, "stopped: hedge lost to b")], 0,
    ]


def test_a_hedge_is_due_once_until_the_slow_attempt_is_left_alone_again() -> None:
    async def run() -> list[object]:
        race: Race[str, str] = Race(SOON)
        release = asyncio.Event()
        seen: list[object] = []
        race.start("a", held(release))
        seen.append(await race.next())
        # No provider to hedge to: the race waits for the attempt instead of saying so again.
        asyncio.get_running_loop().call_later(SOON * 5, release.set)
        seen.append(await race.next())
        return seen

    assert asyncio.run(run()) == [HEDGE_DUE, Finished("a", False, "served")]


def test_when_the_hedge_fails_the_slow_attempt_may_be_hedged_again() -> None:
    async def run() -> list[object]:
        race: Race[str, str] = Race(SOON)
        seen: list[object] = []
        race.start("a", held(asyncio.Event()))
        seen.append(await race.next())
        race.start("b", at_once("HTTP 529"))
        seen.append(await race.next())
        seen.append(await race.next())  # a has been slow for longer than hedge_after already
        seen.append(race.start("c", at_once("from c")))
        seen.append(await race.next())
        seen.append(await race.call_off("hedge lost to c"))
        return seen

    assert asyncio.run(run()) == [
        HEDGE_DUE, Finished("b", True, "HTTP 529"), HEDGE_DUE, True, Finished("c", True, "from c"),
        [Finished("a", False, "stopped: hedge lost to c")],
    ]


def test_attempts_that_finish_together_come_in_the_order_they_started() -> None:
    async def run() -> list[object]:
        race: Race[str, str] = Race(None)
        race.start("a", at_once("from a"))
        race.start("b", at_once("from b"))
        await asyncio.sleep(0)  # both run to their end before the race looks
        return [await race.next(), await race.call_off("late")]

    assert asyncio.run(run()) == [Finished("a", False, "from a"), [Finished("b", True, "from b")]]


def test_at_most_two_attempts_run_at_once() -> None:
    async def run() -> None:
        race: Race[str, str] = Race(SOON)
        for name in "ab"[:MAX_IN_FLIGHT]:
            race.start(name, held(asyncio.Event()))
        with pytest.raises(RuntimeError):
            race.start("c", held(asyncio.Event()))
        await race.call_off("done")

    asyncio.run(run())


def test_an_attempts_exception_reaches_the_caller() -> None:
    async def broken(stop: Stop) -> str:
        raise ValueError("a bug")

    async def run() -> None:
        race: Race[str, str] = Race(None)
        race.start("a", broken)
        await race.next()

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(run())


def test_abandoning_the_race_cancels_every_attempt() -> None:
    async def run() -> list[bool]:
        race: Race[str, str] = Race(None)
        cancelled = [asyncio.Event(), asyncio.Event()]

        def waiting(flag: asyncio.Event) -> Callable[[Stop], Awaitable[str]]:
            async def attempt(stop: Stop) -> str:
                try:
                    await asyncio.Event().wait()
                finally:
                    flag.set()
                return "never"

            return attempt

        race.start("a", waiting(cancelled[0]))
        race.start("b", waiting(cancelled[1]))
        await asyncio.sleep(0)  # both are under way
        race.abandon()
        await asyncio.wait_for(asyncio.gather(*(flag.wait() for flag in cancelled)), 10)
        return [race.in_flight == 0, *(flag.is_set() for flag in cancelled)]

    assert asyncio.run(run()) == [True, True, True]


def test_the_flow_comment_of_a_hedge_win_names_the_attempt_called_off_not_an_attempt_count():
    a_lost = AttemptRecord("a", "cancelled: hedge lost to b", 510.0, failed=False)
    b_won = AttemptRecord("b", "200", 20.0, failed=False, hedge=True)
    assert served_comment("b", [a_lost, b_won]) == "served by b (a hedge: a called off)"
    c_failed = AttemptRecord("c", "HTTP 529 overloaded_error: busy", 5.0, failed=True, hedge=True)
    assert served_comment("b", [c_failed, a_lost, b_won]) == (
        "served by b (a hedge: a called off) after c: HTTP 529 overloaded_error: busy")
    # Without a race, failover reads as before.
    a_failed = AttemptRecord("a", "HTTP 529 overloaded_error: busy", 5.0, failed=True)
    assert served_comment("b", [a_failed, AttemptRecord("b", "200", 20.0, failed=False)]) == (
        "served by b (attempt 2 of 2) after a: HTTP 529 overloaded_error: busy")


# -- Solo: the race when hedging is off ----------------------------------------------------------------------------

def test_hedging_off_gives_the_solo_race_and_on_the_full_one() -> None:
    assert isinstance(race_for(None), Solo)
    assert isinstance(race_for(SOON), Race)


def test_solo_runs_the_attempt_in_the_callers_task_and_makes_no_task() -> None:
    async def run() -> tuple[object, bool, int, int]:
        tasks: list[asyncio.Task[object] | None] = []
        counts: list[int] = []

        async def attempt(stop: Stop) -> str:
            tasks.append(asyncio.current_task())
            counts.append(len(asyncio.all_tasks()))
            await asyncio.sleep(0)
            return "served"

        race: Solo[str, str] = Solo()
        assert race.start("a", attempt) is False  # never a hedge
        assert race.in_flight == 1
        finished = await race.next()
        return finished, tasks[0] is asyncio.current_task(), counts[0], race.in_flight

    assert asyncio.run(run()) == (Finished("a", False, "served"), True, 1, 0)


def test_solo_takes_one_attempt_at_a_time() -> None:
    race: Solo[str, str] = Solo()
    race.start("a", at_once("x"))
    with pytest.raises(RuntimeError):
        race.start("b", at_once("y"))


def test_solo_calls_off_an_attempt_not_yet_read_with_its_stop_set_and_nothing_when_none_is() -> None:
    async def run() -> tuple[list[Finished[str, str]], list[Finished[str, str]], int]:
        race: Solo[str, str] = Solo()
        nothing = await race.call_off("hedge lost to b")
        race.start("a", held(asyncio.Event()))
        called_off = await race.call_off("hedge lost to b")
        return nothing, called_off, race.in_flight

    assert asyncio.run(run()) == ([], [Finished("a", False, "stopped: hedge lost to b")], 0)


def test_solo_passes_an_attempts_exception_on_and_is_empty_after() -> None:
    async def run() -> int:
        async def broken(stop: Stop) -> str:
            raise ValueError("a bug")

        race: Solo[str, str] = Solo()
        race.start("a", broken)
        with pytest.raises(ValueError):
            await race.next()
        return race.in_flight

    assert asyncio.run(run()) == 0


def test_solo_client_gone_calls_the_attempt_off_and_leaves_the_callers_task_uncancelled() -> None:
    """The attempt cancels the task it runs in when the client leaves: with Solo that is the caller's, which must
    go on afterwards as if nothing had been cancelled."""

    async def run() -> tuple[object, int, str]:
        started = asyncio.Event()

        async def parked() -> str:
            started.set()
            await asyncio.Event().wait()
            return "never"

        race: Solo[str, object] = Solo()
        race.start("a", lambda stop: _until_stopped(parked(), started.is_set, stop))
        finished = await race.next()
        await asyncio.sleep(0)  # a cancellation left behind would be raised here
        task = asyncio.current_task()
        assert task is not None
        return finished.outcome if isinstance(finished, Finished) else finished, task.cancelling(), "went on"

    assert asyncio.run(run()) == (CLIENT_GONE, 0, "went on")


def test_cancelling_the_caller_reaches_the_solo_attempt() -> None:
    async def run() -> list[str]:
        seen: list[str] = []
        started = asyncio.Event()

        async def attempt(stop: Stop) -> str:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            return "never"

        async def caller() -> None:
            race: Solo[str, str] = Solo()
            race.start("a", attempt)
            try:
                await race.next()
            except BaseException:
                race.abandon()
                raise

        task = asyncio.ensure_future(caller())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    assert asyncio.run(run()) == ["cancelled"]
