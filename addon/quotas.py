"""Client quotas: requests per minute, tokens per day, an estimated budget per month, each in a fixed window of
wall-clock time (UTC) counted in the balancer's UsageWindows under the subject `client:<name>`.

A request is admitted while every quota of its client has room: it then counts one request at once (so that a
burst cannot slip past), and its tokens and spend once its answer is over. A request admitted under a quota may
take its client past it; the next one is refused until the window ends. With shared state the windows hold the
totals of every instance, so a quota holds for the whole fleet (within one sync of the counts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from .client_keys import ClientKey
from .prices import Charge
from .usage_windows import DAY, MINUTE, MONTH, UsageWindows, Window


@dataclass(frozen=True)
class Quota:
    name: str  # the client key's field
    measure: str  # what UsageWindows counts
    window: Window
    unit: str  # for messages


REQUESTS = Quota("requests_per_minute", "requests", MINUTE, "requests")
TOKENS = Quota("tokens_per_day", "tokens", DAY, "tokens")
BUDGET = Quota("budget_per_month", "spend", MONTH, "USD")
QUOTAS = (REQUESTS, TOKENS, BUDGET)


def subject(client_name: str) -> str:
    return f"client:{client_name}"


def limit_of(client: ClientKey, quota: Quota) -> float | None:
    value = getattr(client, quota.name)
    return None if value is None else float(value)


@dataclass(frozen=True)
class QuotaUse:
    """A client's use of one measure in the current window, and its quota there (None: none)."""

    quota: Quota
    limit: float | None
    used: float
    resets_in: float  # seconds
    resets_at: float  # wall-clock seconds

    @property
    def share_used(self) -> float | None:
        return None if self.limit is None else self.used / self.limit

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    @property
    def retry_after(self) -> int:
        """Whole seconds until the window ends (at least 1)."""
        return max(1, math.ceil(self.resets_in))

    def as_status(self) -> dict[str, object]:
        """What GET /usage shows of it."""
        return {
            "quota": self.quota.name,
            "window": self.quota.window.name,
            "unit": self.quota.unit,
            "used": round(self.used, 6) if self.quota.unit == "USD" else int(self.used),
            "limit": self.limit,
            "share_used": None if self.share_used is None else round(self.share_used, 4),
            "resets_in": round(self.resets_in, 1),
            "resets_at": datetime.fromtimestamp(self.resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@dataclass(frozen=True)
class Refusal:
    client: str
    use: QuotaUse

    @property
    def message(self) -> str:
        use = self.use
        amount = f"{dollars(use.used)} of {dollars(use.limit or 0)}" if use.quota.unit == "USD" else (
            f"{int(use.used)} of {int(use.limit or 0)} {use.quota.unit}"
        )
        return (
            f"client {self.client} is over its quota {use.quota.name} ({amount} in the current {use.quota.window.name}"
            f", UTC); it resets in {use.retry_after} s"
        )


def dollars(amount: float) -> str:
    """`$12.50`; below a dollar with the digits that tell it apart (`$0.0052`, not `$0.01`)."""
    if amount >= 1 or amount == 0:
        return f"${amount:.2f}"
    return f"${amount:.4g}" if amount >= 0.0001 else f"${amount:.2g}"


class QuotaBook:
    def __init__(self, usage: UsageWindows):
        self.usage = usage

    def standing(self, client: ClientKey, quotas: Iterable[Quota] = QUOTAS) -> list[QuotaUse]:
        now = self.usage.now()
        out = []
        for quota in quotas:
            used = self.usage.used(subject(client.name), quota.measure, quota.window, now)
            out.append(QuotaUse(quota, limit_of(client, quota), used, self.usage.resets_in(quota.window, now),
                                quota.window.bounds(now)[1]))
        return out

    def refusal(self, client: ClientKey) -> Refusal | None:
        """The first quota the client has used up, if any."""
        quotas = [q for q in QUOTAS if limit_of(client, q) is not None]
        for use in self.standing(client, quotas):
            if use.exhausted:
                return Refusal(client.name, use)
        return None

    def admit(self, client: ClientKey) -> Refusal | None:
        """None, and the request counted, when the client has room in every quota; else why not."""
        refused = self.refusal(client)
        if refused is None:
            self.usage.add(subject(client.name), REQUESTS.measure, REQUESTS.window, 1)
        return refused

    def charge(self, client_name: str, charge: Charge) -> None:
        """What an answer used, once it is over."""
        now = self.usage.now()
        if charge.counted_tokens:
            self.usage.add(subject(client_name), TOKENS.measure, TOKENS.window, charge.counted_tokens, now)
        if charge.spend:
            self.usage.add(subject(client_name), BUDGET.measure, BUDGET.window, charge.spend, now)
