"""The order in which providers are tried for one request: strategy, priority tiers, affinity, cooldowns, and the
headroom and limits of their keys (a provider none of whose keys is ready goes after those with one)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .config import ProviderConfig, Settings
from .health import AUTH, HealthBoard
from .key_book import KeyBook
from .key_routing import KeyTurn, is_ready, key_turns


@dataclass(frozen=True)
class Plan:
    usable: list[ProviderConfig]  # to try first, in order; nobody twice
    skipped: list[tuple[ProviderConfig, str]]  # enabled but not to be tried, with the reason
    # Cooling down or being probed: tried after `usable`, soonest back first (empty under all_cooling: refuse).
    later: list[ProviderConfig] = field(default_factory=list)
    # Providers of `usable` and `later` that cannot serve the request well, put after those that can
    # (provider_fit.py): never asked beside another as a hedge.
    last_resort: frozenset[str] = frozenset()


def _ordered_tier(
    tier: list[ProviderConfig], strategy: str, board: HealthBoard, rng: random.Random, turn: int
) -> list[ProviderConfig]:
    if strategy == "round_robin" and tier:
        shift = turn % len(tier)
        return tier[shift:] + tier[:shift]
    if strategy == "random":
        return rng.sample(tier, len(tier))
    if strategy == "weighted":
        # Weighted order without replacement: each provider draws u^(1/weight); highest first.
        return sorted(tier, key=lambda p: rng.random() ** (1.0 / p.weight), reverse=True)
    if strategy == "least_latency":
        # Providers with no measurement yet go first, so that every provider gets measured.
        return sorted(tier, key=lambda p: board.get(p.name).latency_ms or 0.0)
    return list(tier)  # priority: file order


def order_providers(
    providers: Sequence[ProviderConfig],
    strategy: str,
    board: HealthBoard,
    rng: random.Random,
    turn: int = 0,
) -> list[ProviderConfig]:
    """Tiers by `priority` number (lower first, file order kept within a number), the strategy within a tier."""
    ordered: list[ProviderConfig] = []
    for _, tier in itertools.groupby(sorted(providers, key=lambda p: p.priority), key=lambda p: p.priority):
        ordered += _ordered_tier(list(tier), strategy, board, rng, turn)
    return ordered


def skip_reason(provider: ProviderConfig, board: HealthBoard) -> str:
    health = board.get(provider.name)
    remaining = board.cooldown_remaining(provider.name)
    if remaining > 0:
        return f"cooling down for {remaining:.0f}s after {health.cooldown_reason or health.last_error or 'a failure'}"
    return "a probe request is testing it"


def plan_attempts(
    providers: Sequence[ProviderConfig],
    board: HealthBoard,
    types: tuple[str, ...] | None = None,
    settings: Settings | None = None,
    preferred: str | None = None,
    rng: random.Random | None = None,
    turn: int = 0,
    ready: Callable[[ProviderConfig], bool] | None = None,
) -> Plan:
    """`ready`: whether a provider has a key that is neither at a limit nor short of headroom; those that have
    none are tried after all that have (never left out for it)."""
    settings = settings or Settings()
    candidates = [p for p in providers if p.enabled and (types is None or p.type in types)]
    ordered = order_providers(candidates, settings.strategy, board, rng or random.Random(), turn)
    available = [p for p in ordered if board.is_available(p.name)]
    waiting = [p for p in ordered if not board.is_available(p.name)]
    usable: list[ProviderConfig] = []
    strained: list[ProviderConfig] = []
    for provider in available:
        (usable if ready is None or ready(provider) else strained).append(provider)
    if preferred is not None and usable:
        # The session's provider first, if it is in the best tier available now: a session that failed over to a
        # backup tier goes back to the main tier when that recovers.
        best = min(p.priority for p in usable)
        if any(p.name == preferred and p.priority == best for p in usable):
            usable.sort(key=lambda p: p.name != preferred)
    usable += strained
    later: list[ProviderConfig] = []
    if settings.all_cooling == "try_soonest":
        # A provider cooling down may still answer: a request fails only after every provider had its chance
        # (a credential that was refused will not come back by trying).
        later = soonest_back_first([p for p in waiting if not out_for_auth(p, board)], board)
    tried_later = {p.name for p in later}
    skipped = [(p, skip_reason(p, board)) for p in waiting if p.name not in tried_later]
    return Plan(usable=usable, skipped=skipped, later=later)


def out_for_auth(provider: ProviderConfig, board: HealthBoard) -> bool:
    """Cooling down because the provider refused its own credential: waiting for the cooldown will not help."""
    return board.is_cooling_down(provider.name) and board.get(provider.name).cooldown_class == AUTH


def soonest_back_first(providers: Sequence[ProviderConfig], board: HealthBoard) -> list[ProviderConfig]:
    """Providers ordered by when their cooldown ends (a stable sort: the planned order breaks ties)."""
    return sorted(providers, key=lambda p: board.cooldown_remaining(p.name))


class Router:
    """Holds what routing remembers between requests: the round-robin turn and a random generator."""

    def __init__(self, seed: int | None = None, keys: KeyBook | None = None):
        # The next round-robin turn. Sharing state moves it to the turn count of all instances now and then.
        self.turn = 0
        self.rng = random.Random(seed)
        self.keys = keys  # the providers' keys: their headroom and limits

    def plan(
        self,
        providers: Sequence[ProviderConfig],
        board: HealthBoard,
        settings: Settings,
        types: tuple[str, ...] | None = None,
        preferred: str | None = None,
        dry_run: bool = False,
    ) -> Plan:
        """`dry_run`: the plan the next request would get, with nothing moved (the round-robin turn, the random
        generator, the keys' skip counts): for an explanation, not for sending."""
        if dry_run:
            with board.peeking():  # no probe's claim asked for either
                return self._plan(providers, board, settings, types, preferred, dry_run)
        return self._plan(providers, board, settings, types, preferred, dry_run)

    def _plan(
        self, providers: Sequence[ProviderConfig], board: HealthBoard, settings: Settings,
        types: tuple[str, ...] | None, preferred: str | None, dry_run: bool,
    ) -> Plan:
        turn = self.turn
        rng = self.rng
        if dry_run:  # the draws the next request will make, from a copy of the generator
            rng = random.Random()
            rng.setstate(self.rng.getstate())
        if not dry_run:
            self.turn += 1
        keys = self.keys
        if keys is None:
            return plan_attempts(providers, board, types, settings, preferred, rng, turn)
        readiness = {p.name: key_turns(p, board, keys, ordered=False) for p in providers if p.enabled and p.keys}
        plan = plan_attempts(
            providers, board, types, settings, preferred, rng, turn,
            ready=lambda p: is_ready(readiness.get(p.name, ())),
        )
        if not dry_run:
            count_skips(plan, readiness, keys)
        return plan


def count_skips(plan: Plan, readiness: dict[str, list[KeyTurn]], keys: KeyBook) -> None:
    """Count the keys passed over for this request (balancer_key_skipped_total): only when something else was
    ready to serve instead (when nothing is, everything is tried and nothing was skipped)."""
    if not any(is_ready(readiness.get(p.name, ())) for p in plan.usable):
        return
    for provider in plan.usable:
        for turn in readiness.get(provider.name, ()):
            if turn.reason is not None:
                keys.count_skip(provider, turn.index, turn.reason)
