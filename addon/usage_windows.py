"""What has been used, per subject (a provider key, a client), in fixed windows of time: requests and tokens in the
current minute, tokens in the current day, spend in the current month; and how many requests are open now.

Limits (per key) and quotas (per client) ask `used` and `open_now` before a request and `add` after it. One
process counts alone; with shared state, the shared-state addon sends each process's increments (`unsynced`) to
the shared server and hands back the totals of all instances (`learn_total`, `learn_open`), so that a limit holds
across instances to within one sync interval. Nothing here waits on the network.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Window:
    """A fixed window of wall-clock time: a minute, a day (UTC) or a calendar month (UTC)."""

    name: str  # "minute", "day" or "month"

    def bounds(self, now: float) -> tuple[float, float]:
        """The start and the end (wall-clock seconds) of the window that holds `now`."""
        if self.name == "minute":
            start = now - now % 60
            return start, start + 60
        if self.name == "day":
            start = now - now % 86400
            return start, start + 86400
        if self.name == "month":
            moment = datetime.fromtimestamp(now, UTC)
            first = calendar.timegm((moment.year, moment.month, 1, 0, 0, 0))
            year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
            return float(first), float(calendar.timegm((year, month, 1, 0, 0, 0)))
        raise ValueError(f"unknown window {self.name!r}")

    def ident(self, now: float) -> str:
        """A name for the window that holds `now`, the same in every instance (e.g. `minute:29486520`)."""
        return f"{self.name}:{int(self.bounds(now)[0])}"


MINUTE, DAY, MONTH = Window("minute"), Window("day"), Window("month")
WINDOWS = {w.name: w for w in (MINUTE, DAY, MONTH)}

# (subject, measure, window ident): e.g. ("key:anthropic-main#1", "tokens", "minute:29486520")
Slot = tuple[str, str, str]


class UsageWindows:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._local: dict[Slot, float] = {}  # what this process counted
        self._pending: dict[Slot, float] = {}  # counted here, not yet sent to the shared server
        self._shared: dict[Slot, float] = {}  # the last total of all instances the shared server gave back
        self._ends: dict[Slot, float] = {}  # when each slot's window ends (for pruning)
        self._open: dict[str, int] = {}  # requests open now in this process
        self._open_elsewhere: dict[str, int] = {}  # in the other instances, as last learned

    def now(self) -> float:
        return float(self._clock())

    def add(self, subject: str, measure: str, window: Window, amount: float, now: float | None = None) -> None:
        """Count `amount` of `measure` (e.g. "requests", "tokens", "spend") for `subject` in the current window."""
        now = self.now() if now is None else now
        start, end = window.bounds(now)
        slot = (subject, measure, f"{window.name}:{int(start)}")
        self._local[slot] = self._local.get(slot, 0.0) + amount
        self._pending[slot] = self._pending.get(slot, 0.0) + amount
        self._ends[slot] = end
        self._prune(now)

    def used(self, subject: str, measure: str, window: Window, now: float | None = None) -> float:
        """What `subject` used of `measure` in the current window: everywhere, as far as this process knows."""
        now = self.now() if now is None else now
        slot = (subject, measure, window.ident(now))
        local = self._local.get(slot, 0.0)
        if slot not in self._shared:
            return local
        return max(local, self._shared[slot] + self._pending.get(slot, 0.0))

    def resets_in(self, window: Window, now: float | None = None) -> float:
        """Seconds until the current window ends."""
        now = self.now() if now is None else now
        return max(window.bounds(now)[1] - now, 0.0)

    def opened(self, subject: str) -> None:
        self._open[subject] = self._open.get(subject, 0) + 1

    def closed(self, subject: str) -> None:
        left = self._open.get(subject, 0) - 1
        if left > 0:
            self._open[subject] = left
        else:
            self._open.pop(subject, None)

    def open_here(self, subject: str) -> int:
        return self._open.get(subject, 0)

    def open_now(self, subject: str) -> int:
        """Requests open now for `subject`, in this process and (as last learned) in the others."""
        return self._open.get(subject, 0) + self._open_elsewhere.get(subject, 0)

    # For the shared-state addon.

    def unsynced(self) -> list[tuple[Slot, float, float]]:
        """The increments not yet sent (slot, amount, window end), forgotten here once taken."""
        taken = [(slot, amount, self._ends.get(slot, 0.0)) for slot, amount in self._pending.items()]
        self._pending.clear()
        return taken

    def unsent(self, slot: Slot, amount: float) -> None:
        """Put back an increment whose sending failed (it goes with the next sync)."""
        self._pending[slot] = self._pending.get(slot, 0.0) + amount

    def learn_total(self, slot: Slot, total: float) -> None:
        """The total of all instances for a slot (this process's sent increments included)."""
        self._shared[slot] = total

    def learn_window_total(self, slot: Slot, total: float, end: float) -> None:
        """`learn_total` for a slot this process may never have counted in: kept until its window `end`."""
        self._shared[slot] = total
        self._ends.setdefault(slot, end)

    def learn_open(self, subject: str, elsewhere: int) -> None:
        """Requests open for `subject` in the other instances."""
        if elsewhere > 0:
            self._open_elsewhere[subject] = elsewhere
        else:
            self._open_elsewhere.pop(subject, None)

    def open_subjects(self) -> dict[str, int]:
        return dict(self._open)

    def _prune(self, now: float) -> None:
        if len(self._ends) < 64:
            return
        for slot in [s for s, end in self._ends.items() if end <= now]:
            self._ends.pop(slot, None)
            self._local.pop(slot, None)
            self._shared.pop(slot, None)
            self._pending.pop(slot, None)
