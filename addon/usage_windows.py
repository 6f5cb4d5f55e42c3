"""What has been used, per subject (a provider key, a client), in fixed windows of time: requests and tokens in the
current minute, tokens in the current day, spend in the current month; and how many requests are open now.

Limits (per key) and quotas (per client) ask `used` and `open_now` before a request and `add` after it. One
process counts alone; with shared state, the shared-state addon (usage_sync.py) writes this process's own totals
of the current windows (`counted`: absolute, so that a retried or repeated write never counts twice and a server
that lost its data is made whole again by the next one) and hands back each other instance's totals
(`learn_others`) and their open requests (`learn_open_elsewhere`), so that a limit holds across instances to
within one sync interval. Nothing here waits on the network.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Mapping
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

# (subject, measure, window ident): e.g. ("key:anthropic-main#3f9a0c1b2d4e5f60", "tokens", "minute:29486520")
Slot = tuple[str, str, str]


class UsageWindows:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._local: dict[Slot, float] = {}  # what this process counted
        # What each other instance counted, as last learned. A count only grows within its window: a smaller one
        # learned later (the shared server lost its data) never lowers what was known.
        self._others: dict[Slot, dict[str, float]] = {}
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
        self._ends[slot] = end
        self._prune(now)

    def used(self, subject: str, measure: str, window: Window, now: float | None = None) -> float:
        """What `subject` used of `measure` in the current window: everywhere, as far as this process knows."""
        now = self.now() if now is None else now
        slot = (subject, measure, window.ident(now))
        return self._local.get(slot, 0.0) + sum(self._others.get(slot, {}).values())

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

    def counted(self, now: float | None = None) -> list[tuple[Slot, float, float]]:
        """This process's own total of every slot it counted in in the current windows: (slot, total, window
        end). Taking it changes nothing: what is written is the whole total, every time."""
        now = self.now() if now is None else now
        return [(slot, total, end) for slot, total in self._local.items() if (end := self._ends.get(slot, 0.0)) > now]

    def learn_others(self, slot: Slot, counts: Mapping[str, float], end: float) -> None:
        """The totals the other instances wrote for a slot (instance -> its total), kept until the window `end`.
        An instance's count is only ever raised: a lower one (the server restarted empty) is older news."""
        if end <= self.now():
            return
        self._prune(self.now())
        known = self._others.setdefault(slot, {})
        for instance, total in counts.items():
            if total > known.get(instance, 0.0):
                known[instance] = total
        self._ends.setdefault(slot, end)

    def learn_open_elsewhere(self, counts: Mapping[str, int]) -> None:
        """Requests open in the other instances, per subject: replaces all that was known (a subject left out has
        none open elsewhere, as far as is known now)."""
        self._open_elsewhere = {subject: n for subject, n in counts.items() if n > 0}

    def open_subjects(self) -> dict[str, int]:
        return dict(self._open)

    def _prune(self, now: float) -> None:
        if len(self._ends) < 64:
            return
        for slot in [s for s, end in self._ends.items() if end <= now]:
            self._ends.pop(slot, None)
            self._local.pop(slot, None)
            self._others.pop(slot, None)
