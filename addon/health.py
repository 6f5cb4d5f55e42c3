"""Per-provider health: failures by class, cooldowns that grow, probes, latency; kept across reloads by name.

Every request reads this board, and only this board. With `settings.shared_state` a `HealthListener` hears of
each change this instance makes (and shares it), changes other instances made are merged in from outside
(`shared_records.merge_health`), and a `probe_gate` says whether this instance may be the one that probes.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

# Failure classes (how a provider failed), as counted in `failures_by_class` and shown by GET /providers.
TRANSPORT = "transport"  # refused, reset, TLS, DNS
TIMEOUT = "timeout"  # no headers (or no first content) in time
RATE_LIMITED = "rate_limited"  # 429
OVERLOADED = "overloaded"  # 503, 529, an overloaded_error event
SERVER_ERROR = "server_error"  # other 5xx, 408
AUTH = "auth"  # 401/403 with the provider's own credential
STREAM_ERROR = "stream_error"  # an error event, a break or an idle stream

# Reading order of a latency sample into the moving average (the rest is history).
LATENCY_WEIGHT = 0.3
# How many of a provider's latest outcomes (successes and failures) its failure rate is taken over.
OUTCOME_WINDOW = 10


@dataclass
class ProviderHealth:
    requests: int = 0  # attempts sent to this provider
    failures: int = 0  # attempts that failed (all time)
    failures_by_class: dict[str, int] = field(default_factory=dict)
    consecutive_failures: int = 0
    cooldowns: int = 0  # cooldowns started since the last success: > 0 means the provider is recovering
    # The latest outcomes, True for a failure: the failure rate that decides whether an error answer cools it down.
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=OUTCOME_WINDOW))
    cooldown_until: float = 0.0  # monotonic clock
    cooldown_reason: str | None = None
    cooldown_class: str | None = None
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock (epoch seconds)
    probing: bool = False  # a request is testing whether the provider is back
    failure_epoch: int = 0  # counts recorded streak failures: attempts compare it to know they are stale
    latency_ms: float | None = None  # moving average of time to first byte (to first content for streams)
    # When and where the health was last reset (a success after failures, a forgiven credential): (wall clock,
    # instance). Instances that share state ignore news from before it; (0.0, "") is "never".
    generation: tuple[float, str] = (0.0, "")

    @property
    def failure_rate(self) -> float:
        """The share of failures among the latest outcomes (0 when there are none)."""
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else 0.0


def cooldown_seconds(
    base: float, growth: float, ceiling: float, consecutive: int, retry_after: float | None = None
) -> float:
    """`base`, multiplied by `growth` for every further consecutive failure, capped at `ceiling` (never below
    `base`), and never shorter than the provider's own `retry-after`."""
    try:
        grown = base * growth ** max(0, consecutive - 1)
    except OverflowError:  # a very long failure streak: the ceiling applies anyway
        grown = float("inf")
    return max(min(grown, max(ceiling, base)), retry_after or 0.0)


def folded_latency(previous: float | None, sample: float, samples: int = 1) -> float:
    """The moving average after `samples` samples of value `sample` (a batch from another instance counts as
    that many samples)."""
    if previous is None:
        return sample
    weight = LATENCY_WEIGHT if samples <= 1 else 1 - (1 - LATENCY_WEIGHT) ** samples
    return previous + weight * (sample - previous)


class HealthListener(Protocol):
    """Hears of the changes this instance makes (never of those merged in from other instances)."""

    def health_changed(self, name: str) -> None:
        """Cooldown, failure streak, last error or generation changed."""

    def probe_started(self, name: str) -> None:
        """A request began testing a provider whose cooldown had ended."""

    def probe_ended(self, name: str) -> None:
        """A probe ended without telling anything (a client error, the client left)."""

    def latency_sampled(self, name: str, latency_ms: float) -> None:
        """A success measured this latency."""


class HealthBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self._clock = clock
        self._wall = wall
        self._health: dict[str, ProviderHealth] = {}
        self.listener: HealthListener | None = None
        # Whether this instance may probe a provider whose cooldown ended (None: always; shared state sets it).
        self.probe_gate: Callable[[str], bool] | None = None
        # The same answer, asking nobody: for a plan that is only looked at (`peeking`).
        self.probe_peek: Callable[[str], bool] | None = None
        self._peeking = False
        # Whether another instance is probing a provider right now (set by shared state).
        self.probing_elsewhere: Callable[[str], bool] | None = None
        self.origin = ""  # this instance, in generations it starts

    def now(self) -> tuple[float, float]:
        """(monotonic, wall) clocks, read together."""
        return self._clock(), self._wall()

    def get(self, name: str) -> ProviderHealth:
        health = self._health.get(name)
        if health is None:
            health = self._health[name] = ProviderHealth()
        return health

    def cooldown_remaining(self, name: str) -> float:
        return max(0.0, self.get(name).cooldown_until - self._clock())

    def is_cooling_down(self, name: str) -> bool:
        return self.cooldown_remaining(name) > 0

    def is_available(self, name: str) -> bool:
        """Not cooling down, and not being probed by another request (or, sharing state, instance) right now."""
        if self.is_cooling_down(name):
            return False
        health = self.get(name)
        if health.probing:
            return False
        if health.cooldowns == 0 or self.probe_gate is None:
            return True
        if self._peeking:
            return self.probe_peek(name) if self.probe_peek is not None else False
        return self.probe_gate(name)

    @contextlib.contextmanager
    def peeking(self) -> Iterator[None]:
        """Within it, `is_available` asks no other instance for a probe's claim (an explanation moves nothing)."""
        self._peeking = True
        try:
            yield
        finally:
            self._peeking = False

    def is_probing(self, name: str) -> bool:
        """A probe is under way here, or at another instance."""
        health = self.get(name)
        if health.probing:
            return True
        elsewhere = self.probing_elsewhere
        return elsewhere is not None and health.cooldowns > 0 and not self.is_cooling_down(name) and elsewhere(name)

    def record_attempt(self, name: str) -> bool:
        """Count an attempt. True when it is a probe: the first one after a cooldown, which other requests
        wait for rather than piling onto a provider that may still be down."""
        health = self.get(name)
        health.requests += 1
        if health.cooldowns > 0 and not health.probing:
            health.probing = True
            if self.listener is not None:
                self.listener.probe_started(name)
        return health.probing

    def record_failure(
        self, name: str, reason: str, cooldown: float | None, kind: str = TRANSPORT, epoch: int | None = None
    ) -> None:
        """Count a failure and, unless it is stale (see count_failure), cool the provider down for `cooldown`
        seconds (None: count it only)."""
        if self.count_failure(name, reason, kind, epoch) and cooldown is not None:
            self.cool_down(name, cooldown, reason, kind)

    def count_failure(self, name: str, reason: str, kind: str = TRANSPORT, epoch: int | None = None) -> bool:
        """Count a failure. `epoch`: the provider's failure_epoch when the failed attempt started; if another
        failure was recorded since, this one is stale: counted, but it does not lengthen the streak (concurrent
        requests are one outage, not many). True when it is not stale."""
        health = self.get(name)
        health.failures += 1
        health.failures_by_class[kind] = health.failures_by_class.get(kind, 0) + 1
        health.outcomes.append(True)
        health.last_error = reason
        health.last_error_at = self._wall()
        if epoch is not None and epoch != health.failure_epoch:
            return False
        health.consecutive_failures += 1
        health.failure_epoch += 1
        health.probing = False
        if self.listener is not None:
            self.listener.health_changed(name)
        return True

    def cool_down(self, name: str, seconds: float, reason: str, kind: str) -> None:
        """Leave the provider out for `seconds` (a shorter cooldown never shortens a longer one)."""
        health = self.get(name)
        health.cooldowns += 1
        health.probing = False
        until = self._clock() + seconds
        if until >= health.cooldown_until:
            health.cooldown_until = until
            health.cooldown_reason = reason
            health.cooldown_class = kind
        if self.listener is not None:
            self.listener.health_changed(name)

    def record_success(self, name: str, latency_ms: float | None = None) -> None:
        health = self.get(name)
        health.outcomes.append(False)
        recovered = bool(health.consecutive_failures or health.cooldowns or health.cooldown_until)
        health.consecutive_failures = health.cooldowns = 0
        health.cooldown_until = 0.0
        health.cooldown_reason = health.cooldown_class = None
        health.probing = False
        if latency_ms is not None:
            health.latency_ms = folded_latency(health.latency_ms, latency_ms)
        if recovered:
            health.generation = (self._wall(), self.origin)
        if self.listener is not None:
            if recovered:
                self.listener.health_changed(name)
            if latency_ms is not None:
                self.listener.latency_sampled(name, latency_ms)

    def record_neutral(self, name: str) -> None:
        """The provider answered, but the answer says nothing about its health (a client error)."""
        health = self.get(name)
        if health.probing:
            health.probing = False
            if self.listener is not None:
                self.listener.probe_ended(name)

    def forgive_auth_failures(self) -> None:
        """After a reload: credentials may have been fixed, so auth cooldowns end."""
        for name, health in self._health.items():
            if health.cooldown_class == AUTH:
                health.cooldown_until = 0.0
                health.cooldown_reason = health.cooldown_class = None
                health.consecutive_failures = health.cooldowns = 0
                health.generation = (self._wall(), self.origin)
                if self.listener is not None:
                    self.listener.health_changed(name)

    def forget(self, name: str) -> None:
        """Start the provider afresh (sharing state: its identity changed, so what was learned is about
        another provider)."""
        self._health.pop(name, None)

    def retain(self, names: Iterable[str]) -> None:
        """After a reload: forget providers that no longer exist, keep the state of the others."""
        keep = set(names)
        for name in list(self._health):
            if name not in keep:
                del self._health[name]
