"""A Messages request's route and its plan: which route takes it, that route's providers in the order the strategy
gives them, less those that cannot serve it (provider_fit.py), or the default route when the route has
`fallback: true` and none of its providers can serve it now.

Within a route everything works as without routes: the configured strategy orders the route's providers (their
`priority` numbers still make tiers, the list's order breaks ties like the file's order does), failover,
cooldowns and session affinity (kept per route: a session's small requests on one route do not move its big ones
on another). The same planning serves requests and `POST /routes/explain` (a dry run that moves nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .affinity import SessionAffinity
from .config import PASSTHROUGH, BalancerConfig, ProviderConfig, Settings
from .health import HealthBoard
from .provider_fit import FittedPlan, fit_plan
from .request_traits import RequestTraits, input_token_bound
from .route_config import DEFAULT_ROUTE, Route
from .route_match import RouteMatch, match_route
from .routing import Plan, Router, skip_reason
from .token_count import count_input_tokens

MESSAGE_TYPES = ("anthropic", "openai")


def with_model(provider: ProviderConfig, model: str | None) -> ProviderConfig:
    """The provider as a route sees it: asked for `model` whatever the tier ("passthrough": the model the client
    asked for), a copy (the configured one is shared by every route)."""
    if model is None:
        return provider
    chosen = None if model == PASSTHROUGH else model
    return provider.model_copy(update={"big_model": chosen, "small_model": chosen})


class RouteTable:
    """Each route's providers as the route asks them, made once per configuration."""

    def __init__(self, config: BalancerConfig):
        self.config = config
        by_name = {provider.name: provider for provider in config.providers}
        self.providers: dict[str, list[ProviderConfig]] = {
            route.name: [with_model(by_name[entry.name], entry.model) for entry in route.providers]
            for route in config.routes
        }
        self.providers[DEFAULT_ROUTE] = list(config.providers)
        # Counting a request's tokens is worth it only above the smallest threshold anything looks at.
        thresholds = [r.when.min_input_tokens for r in config.routes if r.when.min_input_tokens is not None]
        thresholds += [p.max_context for p in config.providers if p.enabled and p.max_context is not None]
        self.count_from: int | None = min(thresholds) if thresholds else None
        # Walking every block for images is worth it only when a route or a provider asks about them.
        self.looks_at_images = (any(r.when.images is not None for r in config.routes)
                                or any(not p.images for p in config.providers))

    def bounded(self, traits: RequestTraits, raw: bytes) -> tuple[RequestTraits, bool]:
        """`traits` with the bound of its input tokens read off the body's size, when anything looks at tokens; and
        whether they must be counted still (the bound does not put them below every threshold)."""
        if self.count_from is None:
            return traits, False
        if len(raw) >= self.count_from:  # the bound is at least the size: counting is needed, the scan is not
            return traits, True  # (scanning 10 MB takes ~20 ms, on the event loop)
        bound = input_token_bound(raw)
        return traits.with_bound(bound), bound >= self.count_from


def count_if_needed(traits: RequestTraits, body: dict[str, Any], raw: bytes, table: RouteTable) -> RequestTraits:
    traits, needed = table.bounded(traits, raw)
    return traits.with_tokens(count_input_tokens(body)) if needed else traits


async def counted(traits: RequestTraits, body: dict[str, Any], raw: bytes, table: RouteTable) -> RequestTraits:
    """`traits` with its input tokens when the table needs them: counted in a thread (a megabyte takes ~0.1 s,
    which streams under way must not wait for)."""
    traits, needed = table.bounded(traits, raw)
    if not needed:
        return traits
    return traits.with_tokens(await asyncio.to_thread(count_input_tokens, body))


def affinity_on(key: str | None, route: str) -> str | None:
    """A session's affinity key on a route: each route keeps the session on a provider of its own."""
    if key is None or route == DEFAULT_ROUTE:
        return key
    return f"{key} route:{route}"


def preferred_on_routes(affinity: SessionAffinity, key: str | None) -> Callable[[str], str | None]:
    """The session's provider on each route (by the route's name), for the planner."""
    return lambda route: affinity.provider_for(affinity_on(key, route))


_table: RouteTable | None = None


def route_table(config: BalancerConfig) -> RouteTable:
    """The table of `config` (the running configuration's, kept until a reload replaces it)."""
    global _table
    if _table is None or _table.config is not config:
        _table = RouteTable(config)
    return _table


@dataclass(frozen=True)
class RoutedPlan:
    match: RouteMatch
    route: str  # the route whose providers the plan holds (the default one after a fallback)
    plan: Plan
    # Why the matched route's providers gave way to the default route's (None: they did not).
    fell_back: str | None = None
    refusal: str | None = None  # no provider can serve the request at all: the client gets a 400 saying why
    hedge_after: float | Literal[False] | None = None  # the route's own (None: the settings'; False: none)
    last_resort: dict[str, str] = field(default_factory=dict)  # provider -> why it is tried only after the others
    traits: RequestTraits | None = None  # what the request is, as it was planned

    def not_tried(self, tried: set[str], board: HealthBoard | None = None) -> list[tuple[str, str]]:
        """The providers left out, those kept as a last resort, and (with `board`) those cooling down that were not
        needed, each with the reason."""
        out = [(p.name, reason) for p, reason in self.plan.skipped]
        out += [(name, f"{reason} (a last resort, not needed)")
                for name, reason in self.last_resort.items() if name not in tried]
        if board is not None:
            out += [(p.name, f"{skip_reason(p, board)} (not needed)") for p in self.plan.later
                    if p.name not in tried and p.name not in self.last_resort]
        return out


def _unusable(fitted: FittedPlan, route: str) -> str:
    reasons = [(p.name, reason) for p, reason in fitted.plan.skipped] + list(fitted.last_resort.items())
    reasons += [(p.name, "cooling down") for p in fitted.plan.later if p.name not in fitted.last_resort]
    why = "; ".join(f"{name}: {reason}" for name, reason in reasons)
    return f"no provider of route {route!r} can serve it now" + (f" ({why})" if why else "")


class RoutePlanner:
    def __init__(self, router: Router):
        self.router = router

    def plan(
        self,
        config: BalancerConfig,
        board: HealthBoard,
        settings: Settings,
        traits: RequestTraits,
        preferred: Callable[[str], str | None],
        dry_run: bool = False,
    ) -> RoutedPlan:
        """`traits` with its input tokens as `counted` gives them. `preferred`: the
        session's provider on a route (by the route's name)."""
        table = route_table(config)
        match = match_route(config.routes, traits)
        route: Route | None = match.route
        fitted = self._fitted(table.providers[match.name], board, settings, traits, preferred(match.name), dry_run,
                              named=route is not None)
        hedge_after = route.hedge_after if route is not None else None
        if route is None or fitted.serves_now or not route.fallback:
            refusal = fitted.refusal
            if refusal is not None and route is not None:
                refusal += f" (route {route.name!r}, fallback off)"
            return RoutedPlan(match, match.name, fitted.plan, refusal=refusal, hedge_after=hedge_after,
                              last_resort=fitted.last_resort, traits=traits)
        fell_back = _unusable(fitted, route.name)
        default = self._fitted(table.providers[DEFAULT_ROUTE], board, settings, traits, preferred(DEFAULT_ROUTE),
                               dry_run)
        return RoutedPlan(match, DEFAULT_ROUTE, default.plan, fell_back=fell_back, refusal=default.refusal,
                          last_resort=default.last_resort, traits=traits)

    def after_failure(
        self,
        routed: RoutedPlan,
        config: BalancerConfig,
        board: HealthBoard,
        settings: Settings,
        preferred: Callable[[str], str | None],
        tried: set[str],
        why: str,
    ) -> RoutedPlan | None:
        """When every provider of a route with `fallback: true` failed this request: the default route's providers
        it has not tried yet (None: the route has no fallback, or nothing is left to try)."""
        route = routed.match.route
        if route is None or not route.fallback or routed.route == DEFAULT_ROUTE or routed.traits is None:
            return None
        rest = [p for p in route_table(config).providers[DEFAULT_ROUTE] if p.name not in tried]
        default = self._fitted(rest, board, settings, routed.traits, preferred(DEFAULT_ROUTE), dry_run=False)
        if default.refusal is not None or not (default.plan.usable or default.plan.later):
            return None
        return RoutedPlan(routed.match, DEFAULT_ROUTE, default.plan,
                          fell_back=f"every provider of route {route.name!r} failed ({why})",
                          last_resort=default.last_resort, traits=routed.traits)

    def _fitted(
        self, providers: Sequence[ProviderConfig], board: HealthBoard, settings: Settings, traits: RequestTraits,
        preferred: str | None, dry_run: bool, named: bool = False,
    ) -> FittedPlan:
        plan = self.router.plan(providers, board, settings, types=MESSAGE_TYPES, preferred=preferred,
                                dry_run=dry_run)
        if named:  # a route's disabled providers are named among its skips (the default route leaves them out)
            plan.skipped[:0] = [(p, "disabled") for p in providers if not p.enabled]
        return fit_plan(plan, traits, providers)
