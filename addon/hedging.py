"""Hedged first tokens: a request's provider attempts as a race, so that one slow provider does not hold it up.

A `Race` runs at most two attempts at a time. When the only attempt in flight has gone `hedge_after` seconds
without finishing, the race says a hedge is due (`HEDGE_DUE`); the caller may then start the next provider beside
it. Which attempt counts, and what happens to the others, is the caller's to decide: it reads each attempt as it
finishes (`Race.next`) and calls the rest off (`Race.call_off`), which asks each attempt to stop through its
`Stop` and waits for what it made of that (an attempt stopped this way still returns its outcome). With hedging off,
`Solo` does the same for one attempt at a time, in the caller's task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

L = TypeVar("L")  # what the caller knows an attempt by
T = TypeVar("T")  # an attempt's outcome

MAX_IN_FLIGHT = 2


class Stop:
    """Set once by whoever started an attempt: the attempt is to give up, for `reason`."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._event: asyncio.Event | None = None  # made only for a waiter
        self._listeners: list[Callable[[str], None]] = []

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            if self._event is not None:
                self._event.set()
            for listener in self._listeners:
                listener(reason)

    async def wait(self) -> str:
        if self.reason is None:
            if self._event is None:
                self._event = asyncio.Event()
            await self._event.wait()
        assert self.reason is not None
        return self.reason

    def listen(self, listener: Callable[[str], None]) -> None:
        """`listener(reason)` is called when the stop is set (at once when it is already)."""
        if self.reason is not None:
            listener(self.reason)
        else:
            self._listeners.append(listener)

    def forget(self, listener: Callable[[str], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)


class HedgeDue:
    """The only attempt in flight has gone `hedge_after` seconds without finishing."""

    def __repr__(self) -> str:
        return "HEDGE_DUE"


HEDGE_DUE = HedgeDue()


@dataclass(frozen=True)
class Finished(Generic[L, T]):
    label: L
    hedge: bool  # it started while another attempt was in flight
    outcome: T


@dataclass
class _Entrant(Generic[L, T]):
    label: L
    hedge: bool
    started: float
    stop: Stop
    task: asyncio.Future[T]
    hedged: bool = False  # a hedge was due beside it since it was last left alone


class Race(Generic[L, T]):
    """At most MAX_IN_FLIGHT attempts under way; `hedge_after` None: a hedge is never due."""

    def __init__(self, hedge_after: float | None, clock: Callable[[], float] = time.monotonic):
        self.hedge_after = hedge_after
        self._clock = clock
        self._entrants: list[_Entrant[L, T]] = []

    @property
    def in_flight(self) -> int:
        return len(self._entrants)

    def start(self, label: L, attempt: Callable[[Stop], Awaitable[T]]) -> bool:
        """Start an attempt (a hedge when another is in flight); whether it is one."""
        if len(self._entrants) >= MAX_IN_FLIGHT:
            raise RuntimeError(f"at most {MAX_IN_FLIGHT} attempts run at once")
        hedge = bool(self._entrants)
        stop = Stop()
        task = asyncio.ensure_future(attempt(stop))
        self._entrants.append(_Entrant(label, hedge, self._clock(), stop, task))
        return hedge

    async def next(self) -> Finished[L, T] | HedgeDue:
        """The next attempt to finish (the earliest started, when several have), which is then no longer in
        flight; or HEDGE_DUE when the only attempt in flight has gone `hedge_after` seconds without finishing: once,
        and again each time it is left alone after another attempt finished. An attempt's exception is raised
        here."""
        if not self._entrants:
            raise RuntimeError("no attempt in flight")
        while True:
            for entrant in self._entrants:
                if entrant.task.done():
                    self._entrants.remove(entrant)
                    for other in self._entrants:  # alone again: it may have another hedge beside it
                        other.hedged = False
                    return Finished(entrant.label, entrant.hedge, entrant.task.result())
            due_at = self._hedge_due_at()
            if due_at is not None and self._clock() >= due_at:
                self._entrants[0].hedged = True
                return HEDGE_DUE
            timeout = None if due_at is None else max(due_at - self._clock(), 0.0)
            await asyncio.wait([e.task for e in self._entrants], timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)

    def _hedge_due_at(self) -> float | None:
        if self.hedge_after is None or len(self._entrants) != 1 or self._entrants[0].hedged:
            return None
        return self._entrants[0].started + self.hedge_after

    async def call_off(self, reason: str) -> list[Finished[L, T]]:
        """Stop every attempt in flight for `reason` and wait for their outcomes (in the order they started); an
        attempt that finished meanwhile keeps the outcome it had. The first exception of any is raised, once all
        are over."""
        for entrant in self._entrants:
            entrant.stop.set(reason)
        if self._entrants:
            await asyncio.wait([e.task for e in self._entrants])  # cancelled meanwhile: abandon() has them
        entrants, self._entrants = self._entrants, []
        for entrant in entrants:
            retrieve_exception(entrant.task)
        return [Finished(e.label, e.hedge, e.task.result()) for e in entrants]

    def abandon(self) -> None:
        """Cancel every attempt in flight without waiting (the caller is going away: cancelled, or a bug)."""
        entrants, self._entrants = self._entrants, []
        for entrant in entrants:
            entrant.task.cancel()
            entrant.task.add_done_callback(retrieve_exception)


class Solo(Generic[L, T]):
    """The race when hedging is off: one attempt at a time, run in the caller's own task while it reads it (`next`),
    so an attempt makes no task of its own and no wait on one. A hedge is never due."""

    def __init__(self) -> None:
        self._waiting: tuple[L, Callable[[Stop], Awaitable[T]]] | None = None

    @property
    def in_flight(self) -> int:
        return 0 if self._waiting is None else 1

    def start(self, label: L, attempt: Callable[[Stop], Awaitable[T]]) -> bool:
        if self._waiting is not None:
            raise RuntimeError("one attempt at a time without hedging")
        self._waiting = (label, attempt)
        return False

    async def next(self) -> Finished[L, T] | HedgeDue:
        return await self._run(Stop())

    async def call_off(self, reason: str) -> list[Finished[L, T]]:
        """An attempt started and not yet read runs with its stop already set (it returns why at once)."""
        if self._waiting is None:
            return []
        stop = Stop()
        stop.set(reason)
        return [await self._run(stop)]

    def abandon(self) -> None:
        self._waiting = None  # one under way runs in the caller's task: its cancellation reaches it

    async def _run(self, stop: Stop) -> Finished[L, T]:
        if self._waiting is None:
            raise RuntimeError("no attempt in flight")
        label, attempt = self._waiting
        try:
            return Finished(label, False, await attempt(stop))
        finally:
            self._waiting = None


def race_for(hedge_after: float | None) -> Race[L, T] | Solo[L, T]:
    """A Race when hedging is on; else the cheaper Solo, which behaves the same without hedges."""
    return Race(hedge_after) if hedge_after is not None else Solo()


def retrieve_exception(task: asyncio.Future[Any]) -> None:
    """Take an abandoned attempt's exception, so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()
