"""Which model a provider is asked for, given the model the client requested."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import ProviderConfig

Tier = Literal["big", "small"]


@dataclass(frozen=True)
class ModelChoice:
    model: str  # what the provider receives
    tier: Tier
    tier_known: bool  # False: the requested name matched no tier and "big" was assumed


def tier_of(requested: str) -> tuple[Tier, bool]:
    """`opus`/`sonnet` -> big, `haiku` -> small, anything else -> big (and not known)."""
    name = requested.lower()
    if "haiku" in name:
        return "small", True
    if "opus" in name or "sonnet" in name:
        return "big", True
    return "big", False


def choose_model(requested: str, provider: ProviderConfig) -> ModelChoice:
    tier, known = tier_of(requested)
    configured = provider.big_model if tier == "big" else provider.small_model
    return ModelChoice(model=configured or requested, tier=tier, tier_known=known)
