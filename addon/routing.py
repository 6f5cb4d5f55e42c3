"""The order in which providers are tried for one request."""

from __future__ import annotations

from dataclasses import dataclass

from .config import ProviderConfig
from .health import HealthBoard


@dataclass(frozen=True)
class Plan:
    usable: list[ProviderConfig]  # to try, in order
    skipped: list[tuple[ProviderConfig, str]]  # enabled but left out, with the reason


def plan_attempts(providers: list[ProviderConfig], board: HealthBoard, types: tuple[str, ...] | None = None) -> Plan:
    """Priority order: enabled providers in file order, those cooling down left out."""
    usable: list[ProviderConfig] = []
    skipped: list[tuple[ProviderConfig, str]] = []
    for provider in providers:
        if not provider.enabled or (types is not None and provider.type not in types):
            continue
        remaining = board.cooldown_remaining(provider.name)
        if remaining > 0:
            last = board.get(provider.name).last_error or "a failure"
            skipped.append((provider, f"cooling down for {remaining:.0f}s after {last}"))
        else:
            usable.append(provider)
    return Plan(usable=usable, skipped=skipped)
