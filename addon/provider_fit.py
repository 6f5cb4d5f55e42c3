"""Which providers can serve a Messages request at all, and the plan that tries those that can first (pure, no I/O).

- A provider with `images: false` never gets a request with images; when no provider can take them, the client
  gets a 400 saying so.
- Server tools run only at Anthropic-type providers: an OpenAI-type provider is tried only after every one that
  can run them failed or is unusable, asked without them (server_tools.py names the dropped tools in a header).
- A provider whose `max_context` is below the request's input estimate is likewise tried only after those that
  can take it (the estimate is the local counter's, not the model's own: the provider's answer decides, and its
  "prompt is too long" is what makes Claude Code compact).

A provider left out is in the plan's `skipped` with its reason; one kept as a last resort in `last_resort` with
its reason (the request's record names it when it was not needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .config import ProviderConfig
from .request_traits import RequestTraits
from .routing import Plan


@dataclass(frozen=True)
class Unfit:
    reason: str
    hard: bool  # never sent to it; else it may serve as a last resort


def unfit_for(provider: ProviderConfig, traits: RequestTraits) -> Unfit | None:
    """Why `provider` cannot serve the request (the first reason, a hard one before the others), or None."""
    if traits.images and not provider.images:
        return Unfit("has images: false and the request carries images", hard=True)
    if traits.server_tools and provider.type != "anthropic":
        return Unfit(f"cannot run server tools ({_named(traits.server_tools)}): not an Anthropic-type provider",
                     hard=False)
    tokens, limit = traits.input_tokens, provider.max_context
    if tokens is not None and limit is not None and tokens > limit:
        return Unfit(f"the request's estimated {tokens} input tokens exceed its max_context {limit}", hard=False)
    return None


# Tool types are the client's words: a reason names a few, each cut short, however many it sent.
NAMED_TYPES, TYPE_CHARS = 3, 64


def _named(types: Sequence[str]) -> str:
    named = ", ".join(kind[:TYPE_CHARS] for kind in types[:NAMED_TYPES])
    return named + (f" and {len(types) - NAMED_TYPES} more" if len(types) > NAMED_TYPES else "")


@dataclass(frozen=True)
class FittedPlan:
    plan: Plan
    # None, or why no provider can serve the request at all (for the client's 400).
    refusal: str | None = None
    # Providers kept in the plan, after all that can serve the request, though they cannot serve it well.
    last_resort: dict[str, str] = field(default_factory=dict)

    @property
    def serves_now(self) -> bool:
        """A provider that can serve the request is usable now (not cooling down, not skipped)."""
        return bool(self.plan.usable) and self.plan.usable[0].name not in self.last_resort


def fit_plan(plan: Plan, traits: RequestTraits, candidates: Sequence[ProviderConfig]) -> FittedPlan:
    """The plan without the providers that must not get the request (each in `skipped` with its reason), and those
    that cannot serve it well after the others, in the order each list had. `candidates`: the providers the plan
    was made of, to tell "none can serve it" from "none is usable now"."""
    unfit = {p.name: why for p in [*plan.usable, *plan.later] if (why := unfit_for(p, traits)) is not None}
    skipped = list(plan.skipped)
    last_resort: dict[str, str] = {}

    def ordered(providers: list[ProviderConfig]) -> list[ProviderConfig]:
        rest: list[ProviderConfig] = []
        for provider in providers:
            why = unfit.get(provider.name)
            if why is None:
                continue
            if why.hard:
                skipped.append((provider, why.reason))
            else:
                rest.append(provider)
                last_resort[provider.name] = why.reason
        return [p for p in providers if p.name not in unfit] + rest

    fitted = Plan(usable=ordered(list(plan.usable)), skipped=skipped, later=ordered(list(plan.later)),
                  last_resort=frozenset(last_resort)) if unfit else plan
    enabled = [p for p in candidates if p.enabled]
    refusal = None
    if enabled and all((why := unfit_for(p, traits)) is not None and why.hard for p in enabled):
        refusal = "no provider can serve this request: it carries images and every provider for it has images: false"
    return FittedPlan(fitted, refusal, last_resort)
