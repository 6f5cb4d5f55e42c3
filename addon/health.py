"""Per-provider health: failures, cooldowns and the last error, kept across reloads by provider name."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class ProviderHealth:
    requests: int = 0  # attempts sent to this provider
    failures: int = 0  # attempts that failed over (all time)
    consecutive_failures: int = 0
    cooldown_until: float = 0.0  # monotonic clock
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock (epoch seconds)


class HealthBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self._clock = clock
        self._wall = wall
        self._health: dict[str, ProviderHealth] = {}

    def get(self, name: str) -> ProviderHealth:
        health = self._health.get(name)
        if health is None:
            health = self._health[name] = ProviderHealth()
        return health

    def cooldown_remaining(self, name: str) -> float:
        return max(0.0, self.get(name).cooldown_until - self._clock())

    def is_cooling_down(self, name: str) -> bool:
        return self.cooldown_remaining(name) > 0

    def record_attempt(self, name: str) -> None:
        self.get(name).requests += 1

    def record_failure(self, name: str, reason: str, cooldown: float) -> None:
        health = self.get(name)
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = reason
        health.last_error_at = self._wall()
        health.cooldown_until = max(health.cooldown_until, self._clock() + cooldown)

    def record_success(self, name: str) -> None:
        health = self.get(name)
        health.consecutive_failures = 0
        health.cooldown_until = 0.0

    def retain(self, names: Iterable[str]) -> None:
        """After a reload: forget providers that no longer exist, keep the state of the others."""
        keep = set(names)
        for name in list(self._health):
            if name not in keep:
                del self._health[name]
