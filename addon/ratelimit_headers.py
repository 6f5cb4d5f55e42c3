"""The rate-limit headers providers send with every answer (success or error), read into what is left of each limit
and when it resets; and whether that leaves a key enough headroom. Pure functions only.

Three families:
- Anthropic API keys: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
  the reset as an RFC 3339 time;
- Anthropic subscriptions: `anthropic-ratelimit-unified-status` and `-reset`, and per window (`5h`, `7d`, ...)
  `anthropic-ratelimit-unified-<window>-{utilization,status,reset}`, utilization a 0..1 fraction, resets as Unix
  seconds;
- OpenAI style: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the reset as a duration (`1s`, `6m0s`,
  `20ms`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

ANTHROPIC, UNIFIED, OPENAI = "anthropic", "anthropic-unified", "openai"
# Unified status values.
ALLOWED, WARNING, REJECTED = "allowed", "allowed_warning", "rejected"
# Why a key is passed over (the `reason` label of balancer_key_skipped_total).
LOW_HEADROOM, HIGH_UTILIZATION, LIMIT_REJECTED = "headroom", "utilization", "rejected"
# A limit that says nothing of its reset is held for this long after it was read.
DEFAULT_HOLD = 60.0
# How far away a reset can sensibly be. A reset beyond it is a wrong header or clock, and is taken as unknown
# (DEFAULT_HOLD): a key passed over gets no traffic, so no later answer would ever correct it. Request and token
# limits are per-minute buckets (OpenAI's resets of a few minutes are the time to refill a whole bucket); a
# subscription window lasts its length (`5h`, `7d`), the overall status at most the longest window.
BUCKET_CEILING = 10 * 60.0
RESET_CEILING = 7 * 24 * 3600.0
_WINDOW_UNITS = {"h": 3600.0, "d": 24 * 3600.0}
# Resets at or beyond this are Unix milliseconds (OpenRouter's X-RateLimit-Reset), not seconds.
_EPOCH_MS = 1e12

_ANTHROPIC = re.compile(r"anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-(limit|remaining|reset)")
# A window of a subscription: `5h`, `7d`, `7d_opus`, ...; `overage` and the like are not limits of the key.
_UNIFIED = re.compile(r"anthropic-ratelimit-unified-(?:(\d+[hd](?:_[a-z0-9]+)?)-)?(status|utilization|reset)")
_OPENAI = re.compile(r"x-ratelimit-(limit|remaining|reset)-(requests|tokens)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


@dataclass(frozen=True)
class Budget:
    """One limit as an answer states it."""

    family: str  # ANTHROPIC, UNIFIED or OPENAI
    name: str  # "requests", "tokens", "input-tokens", "output-tokens", a window ("5h", "7d"), "unified"
    limit: float | None = None
    remaining: float | None = None
    utilization: float | None = None  # subscription windows: the share used, 0..1
    status: str | None = None  # subscriptions: allowed, allowed_warning, rejected
    reset_at: float | None = None  # wall clock

    @property
    def share(self) -> float | None:
        """The share of the limit still left (0..1), when the answer says."""
        if self.limit is not None and self.remaining is not None and self.limit > 0:
            return min(max(self.remaining / self.limit, 0.0), 1.0)
        if self.utilization is not None:
            return min(max(1.0 - self.utilization, 0.0), 1.0)
        return None


@dataclass(frozen=True)
class Reading:
    """What one answer said about its key's limits."""

    budgets: tuple[Budget, ...]
    at: float  # wall clock of the answer

    @property
    def source(self) -> str:
        """The header families it came from, e.g. `anthropic` or `anthropic+anthropic-unified`."""
        return "+".join(sorted({budget.family for budget in self.budgets}))

    @property
    def tightest(self) -> Budget | None:
        """The limit with the least share left (None when no limit says how much is left)."""
        known = [b for b in self.budgets if b.share is not None]
        return min(known, key=lambda b: b.share or 0.0) if known else None


@dataclass(frozen=True)
class Shortfall:
    """A key without enough headroom: why (LOW_HEADROOM, HIGH_UTILIZATION, LIMIT_REJECTED), which limit, until
    when (wall clock)."""

    reason: str
    budget: str
    until: float


def parse_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_duration(value: str) -> float | None:
    """`1s`, `6m0s`, `20ms`, `1h2m3.5s` -> seconds (None when it is not such a duration)."""
    text = value.strip()
    if not text or _DURATION.sub("", text):
        return None
    return sum(float(n) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit] for n, unit in _DURATION.findall(text))


def window_ceiling(window: str) -> float:
    """How far away the reset of a subscription window can be: its length (`5h`, `7d_opus`), RESET_CEILING for the
    overall status or a window whose name says no length."""
    match = re.match(r"(\d+)([hd])", window)
    return min(int(match.group(1)) * _WINDOW_UNITS[match.group(2)], RESET_CEILING) if match else RESET_CEILING


def parse_reset(value: str | None, now: float, ceiling: float = RESET_CEILING) -> float | None:
    """A reset as a wall-clock moment: Unix seconds or milliseconds, seconds from now (a plain small number), a
    duration, or an RFC 3339 time. None when it says none, or one more than `ceiling` ahead (not believed)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    number = parse_number(text)
    if number is not None:
        moment = number / 1000 if number >= _EPOCH_MS else number if number >= 1e9 else now + number
    else:
        duration = parse_duration(text)
        if duration is not None:
            moment = now + duration
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                return None
            if parsed.tzinfo is None:
                return None
            moment = parsed.timestamp()
    return moment if moment <= now + ceiling else None


def _share(value: str | None) -> float | None:
    number = parse_number(value)
    return min(number, 1.0) if number is not None else None


def read_headers(headers: Iterable[tuple[str, str]], now: float) -> Reading | None:
    """The limits an answer's headers state (None when they state none)."""
    anthropic: dict[str, dict[str, str]] = {}
    unified: dict[str, dict[str, str]] = {}
    openai: dict[str, dict[str, str]] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if not name.startswith(("anthropic-ratelimit-", "x-ratelimit-")):
            continue
        if match := _ANTHROPIC.fullmatch(name):
            anthropic.setdefault(match.group(1), {})[match.group(2)] = value
        elif match := _UNIFIED.fullmatch(name):
            unified.setdefault(match.group(1) or "unified", {})[match.group(2)] = value
        elif match := _OPENAI.fullmatch(name):
            openai.setdefault(match.group(2), {})[match.group(1)] = value
    budgets: list[Budget] = []
    for family, found in ((ANTHROPIC, anthropic), (OPENAI, openai)):
        for kind, fields in sorted(found.items()):
            budgets.append(Budget(
                family, kind, limit=parse_number(fields.get("limit")), remaining=parse_number(fields.get("remaining")),
                reset_at=parse_reset(fields.get("reset"), now, BUCKET_CEILING),
            ))
    for window, fields in sorted(unified.items()):
        status = fields.get("status", "").strip().lower() or None
        budgets.append(Budget(
            UNIFIED, window, utilization=_share(fields.get("utilization")), status=status,
            reset_at=parse_reset(fields.get("reset"), now, window_ceiling(window)),
        ))
    return Reading(tuple(budgets), now) if budgets else None


def shortfall(reading: Reading, now: float, headroom: float, utilization: float) -> Shortfall | None:
    """Whether the key `reading` is about should be passed over now: a limit whose share left is below
    `headroom`; a subscription window `rejected`, or `allowed_warning` and used above `utilization`. Each holds
    until its reset (DEFAULT_HOLD after the reading when the answer named none); the one that lasts longest is
    given."""
    # The overall status warns for whichever window is used most: a window's utilization says which.
    warned = any(b.family == UNIFIED and b.name == "unified" and b.status == WARNING for b in reading.budgets)
    found: list[Shortfall] = []
    for budget in reading.budgets:
        until = budget.reset_at if budget.reset_at is not None else reading.at + DEFAULT_HOLD
        if until <= now:
            continue  # its window has reset since
        if budget.status == REJECTED:
            found.append(Shortfall(LIMIT_REJECTED, budget.name, until))
        elif budget.family == UNIFIED:
            used = budget.utilization
            if (budget.status == WARNING or warned) and used is not None and used > utilization:
                found.append(Shortfall(HIGH_UTILIZATION, budget.name, until))
        elif budget.share is not None and budget.share < headroom:
            found.append(Shortfall(LOW_HEADROOM, budget.name, until))
    return max(found, key=lambda s: s.until) if found else None
