"""Usage shared between instances (usage_windows.py): one exchange with the shared server every sync interval, off
the request path.

Each window slot (subject, measure, window) is a hash on the server with one field per instance, whose value is
that instance's own total in the window (HSET, expiring at the window's end plus USAGE_SLACK). Writing totals
rather than increments makes every write idempotent: a write retried after a failure counts nothing twice, and a
server restarted empty holds every live instance's count again after its next sync. An instance that stopped
keeps its part until the window ends (it did use it). What the others wrote comes back in the same pipeline
(HGETALL) for every slot shown or limited here, so that every instance's figures converge.

Requests open now are a hash per subject too (field per instance, "count:wall time", refreshed every sync): a
count not refreshed within OPEN_STALE is of an instance that is gone, and a subject no longer read is taken as
having none open elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .shared_records import Keys
from .usage_windows import Slot, UsageWindows, Window

if TYPE_CHECKING:
    from valkey.asyncio.client import Pipeline

USAGE_SLACK = 120  # seconds a usage hash outlives its window (clocks slightly apart, a late last sync)
OPEN_STALE = 10.0  # seconds after which an instance's count of open requests is taken as gone (it died)
OPEN_TTL_MS = 60_000  # a whole hash of open counts goes when no instance refreshes it


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def others_counts(fields: Any, origin: str) -> dict[str, float]:
    """The totals of the other instances in a usage hash (`instance -> total`); unreadable fields are skipped."""
    counts: dict[str, float] = {}
    if not isinstance(fields, dict):
        return counts
    for instance, value in fields.items():
        name = _text(instance)
        if name == origin:
            continue
        try:
            total = float(_text(value))
        except ValueError:
            continue
        if total > 0 and total != float("inf"):
            counts[name] = total
    return counts


def open_elsewhere(fields: Any, origin: str, wall: float) -> int:
    """Requests open in the other instances, from an open-count hash (`instance -> "count:wall time"`); counts not
    refreshed within OPEN_STALE are of an instance that is gone."""
    total = 0
    if not isinstance(fields, dict):
        return 0
    for instance, value in fields.items():
        count, _, at = _text(value).partition(":")
        try:
            if _text(instance) != origin and wall - float(at) <= OPEN_STALE:
                total += max(int(count), 0)
        except ValueError:
            continue
    return total


def slot_of(subject: str, measure: str, window: Window, wall: float) -> tuple[Slot, float]:
    """The slot of the window that holds `wall`, and that window's end."""
    start, end = window.bounds(wall)
    return (subject, measure, f"{window.name}:{int(start)}"), end


@dataclass
class UsageSync:
    """What this instance exchanges about usage; `exchange` builds one round, `learn` takes its replies."""

    keys: Keys
    origin: str
    _open_sent: set[str] = field(default_factory=set)  # subjects whose open count this instance has on the server

    def forget(self, usage: UsageWindows) -> None:
        """The server was lost: what it holds of this instance is unknown, and what the others have open too."""
        self._open_sent.clear()
        usage.learn_open_elsewhere({})

    def exchange(self, usage: UsageWindows, read: Iterable[tuple[Slot, float]], open_subjects: Iterable[str],
                 wall: float) -> UsageRound:
        """A round: this instance's totals to write, the slots to read back (`read`: slot, window end; the slots
        written are read too) and the subjects whose open requests to share and learn."""
        written = usage.counted(wall)
        reads = {slot: end for slot, _, end in written}
        for slot, end in read:
            reads.setdefault(slot, end)
        opens = usage.open_subjects()
        subjects = sorted(set(opens) | self._open_sent | set(open_subjects))
        return UsageRound(self, written, list(reads.items()), {s: opens.get(s, 0) for s in subjects}, wall)


@dataclass
class UsageRound:
    sync: UsageSync
    written: list[tuple[Slot, float, float]]  # (slot, this instance's total, window end)
    read: list[tuple[Slot, float]]  # (slot, window end)
    opens: dict[str, int]  # subject -> requests open here (0: none, and the field is removed)
    wall: float

    def queue(self, pipe: Pipeline) -> None:
        keys, origin = self.sync.keys, self.sync.origin
        for slot, total, end in self.written:
            key = keys.usage(*slot)
            pipe.hset(key, origin, repr(total))
            pipe.expireat(key, int(end + USAGE_SLACK))
        for slot, _ in self.read:
            pipe.hgetall(keys.usage(*slot))
        for subject, count in self.opens.items():
            key = keys.open(subject)
            if count:
                pipe.hset(key, origin, f"{count}:{self.wall:.3f}")
                pipe.pexpire(key, OPEN_TTL_MS)
            else:
                pipe.hdel(key, origin)
            pipe.hgetall(key)

    def learn(self, replies: list[Any], usage: UsageWindows) -> None:
        """Take in the pipeline's replies (in the order `queue` asked)."""
        origin = self.sync.origin
        cursor = 2 * len(self.written)
        for slot, end in self.read:
            usage.learn_others(slot, others_counts(replies[cursor], origin), end)
            cursor += 1
        elsewhere: dict[str, int] = {}
        for subject, count in self.opens.items():
            cursor += 3 if count else 2
            elsewhere[subject] = open_elsewhere(replies[cursor - 1], origin, self.wall)
        usage.learn_open_elsewhere(elsewhere)
        self.sync._open_sent = {s for s, count in self.opens.items() if count}

