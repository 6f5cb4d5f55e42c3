"""The `routes:` list of the providers file: its schema and the checks that need the providers (pure, no I/O).

A route names the requests it takes (`when`: every condition must hold) and the providers that serve them, in
order, each optionally asked for a model of the route's choosing. Routes are tried in file order; the first that
matches wins (route_match.py); a request no route takes goes to every provider, as without routes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from .server_tools import SERVER_TOOL_PREFIXES, SERVER_TOOL_TYPES

if TYPE_CHECKING:
    from .config import ProviderConfig

# The route a request takes when no route of the file matches: every provider.
DEFAULT_ROUTE = "default"

# Route names go into log lines and flow metadata as they are.
_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

CONDITIONS = (
    "model_tier", "model", "thinking", "min_input_tokens", "server_tools", "images", "subagent", "header", "client",
)
ROUTE_KEYS = ("name", "when", "providers", "fallback", "hedge_after")


# The server tool types a route may name: a family (each of its dated versions) or one version of it.
SERVER_TOOL_FAMILIES = tuple(prefix.rstrip("_") for prefix in SERVER_TOOL_PREFIXES) + tuple(sorted(SERVER_TOOL_TYPES))


def known_server_tool(kind: str) -> bool:
    """A family, one of its versions, or a glob (taken as written: it may name versions not yet released)."""
    if any(char in kind for char in "*?["):
        return True
    return kind in SERVER_TOOL_FAMILIES or kind.startswith(SERVER_TOOL_PREFIXES)


def _unknown(value: Any, known: Sequence[str], what: str) -> Any:
    if isinstance(value, dict):
        unknown = [str(key) for key in value if key not in known]
        if unknown:
            names = ", ".join(repr(key) for key in unknown)
            raise ValueError(f"unknown {what}{'s' if len(unknown) > 1 else ''} {names}; known: {', '.join(known)}")
    return value


class RouteWhen(BaseModel):
    """What a request must be for the route to take it; an unset condition is not looked at."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    model_tier: Literal["big", "small"] | None = None  # model_map.tier_of: haiku small, the rest big
    model: str | None = Field(default=None, min_length=1)  # a glob on the requested model, any letter case
    # Strict: a quoted "yes" or "false" is a mistake to name, not a truth value to guess.
    thinking: StrictBool | None = None  # the request asks for thinking (enabled or adaptive)
    min_input_tokens: int | None = Field(default=None, gt=0)  # the local estimate (token_count.py)
    server_tools: StrictBool | list[str] | None = None  # true: any server tool; a list: one of these types (globs)
    images: StrictBool | None = None  # an image block anywhere in the messages (tool results too)
    subagent: StrictBool | None = None  # Claude Code's subagent marker (request_traits.py)
    header: dict[str, str] | None = None  # client header name (any case) -> glob on its value
    client: str | None = Field(default=None, min_length=1)  # the name of the client key presented

    @model_validator(mode="before")
    @classmethod
    def _known_conditions(cls, value: Any) -> Any:
        return _unknown(value, CONDITIONS, "condition")

    @field_validator("header")
    @classmethod
    def _lower_names(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value and not all(name.strip() for name in value):
            raise ValueError("a header name is empty")
        return {name.strip().lower(): glob for name, glob in value.items()} if value else None

    @field_validator("server_tools")
    @classmethod
    def _some_types(cls, value: bool | list[str] | None) -> bool | list[str] | None:
        if isinstance(value, list) and not value:
            raise ValueError("an empty list matches nothing: list tool types (web_search, ...) or write true")
        if isinstance(value, list):
            unknown = [kind for kind in value if not known_server_tool(kind)]
            if unknown:
                raise ValueError(f"unknown server tool type {unknown[0]!r}; known: {', '.join(SERVER_TOOL_FAMILIES)} "
                                 "(a family takes each of its versions, e.g. web_search_20250305)")
        return value

    def conditions(self) -> list[tuple[str, Any]]:
        """The conditions set, in CONDITIONS order: (name, what the file asks)."""
        return [(name, getattr(self, name)) for name in CONDITIONS if getattr(self, name) is not None]


class RouteProvider(BaseModel):
    """A provider of a route: its name, and the model it is asked for on this route (else its own mapping)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    name: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)  # "passthrough": the model the client asked for


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    name: str
    when: RouteWhen = Field(default_factory=RouteWhen)
    providers: list[RouteProvider]
    # When every provider of the route is unusable (cooling down, disabled, unable to serve the request), the
    # request takes the default route instead of failing.
    fallback: StrictBool = False
    # Seconds before the next provider is also asked while the first has sent no content (failover.py); false: never
    # for this route whatever the setting (a long context's first token is slow, and a hedge bills it twice).
    hedge_after: Literal[False] | float | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        return _unknown(value, ROUTE_KEYS, "key")

    @field_validator("hedge_after", mode="before")
    @classmethod
    def _seconds_or_off(cls, value: Any) -> Any:
        if value is None or value is False:
            return value
        try:
            seconds = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError("a number of seconds above 0 (finite), or false: no hedging on this route")
        return seconds

    @field_validator("when", mode="before")
    @classmethod
    def _empty_when(cls, value: Any) -> Any:
        return {} if value is None else value  # `when:` with every condition commented out: none

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _ROUTE_NAME.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit")
        if value == DEFAULT_ROUTE:
            raise ValueError(f"{DEFAULT_ROUTE!r} is the name of the route of requests no route takes")
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _names_or_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("providers")
    @classmethod
    def _some_providers(cls, value: list[RouteProvider]) -> list[RouteProvider]:
        if not value:
            raise ValueError("a route needs at least one provider")
        names = [entry.name for entry in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"provider {twice[0]!r} is listed twice")
        return value


def route_problems(
    routes: Sequence[Route], providers: Sequence[ProviderConfig], client_names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the routes against the providers and client keys of the same file: one line each,
    naming the route. An error is a route that refers to what does not exist or can never serve what it takes."""
    errors: list[str] = []
    warnings: list[str] = []
    by_name = {provider.name: provider for provider in providers}
    seen: set[str] = set()
    for position, route in enumerate(routes):
        later = [r.name for r in routes[position + 1:]]
        if not route.when.conditions() and later:
            warnings.append(f"route {route.name!r} has no conditions: it takes every request, so the routes after it "
                            f"({', '.join(later)}) never match; move it last or give it a `when`")
        where = f"route {route.name!r}"
        if route.name in seen:
            errors.append(f"{where}: the name is used twice; route names must be unique")
        seen.add(route.name)
        unknown = [entry.name for entry in route.providers if entry.name not in by_name]
        if unknown:
            errors.append(f"{where}: unknown provider {unknown[0]!r} (the providers are: {', '.join(by_name)})")
            continue
        listed = [by_name[entry.name] for entry in route.providers]
        when = route.when
        if when.client is not None and when.client not in client_names:
            known = ", ".join(client_names) if client_names else "none: settings.client_keys is empty"
            errors.append(f"{where}: client {when.client!r} is not a client key's name (the names: {known})")
        if when.server_tools and not any(p.type == "anthropic" for p in listed):
            errors.append(f"{where}: takes requests with server tools, but lists no Anthropic-type provider "
                          "(only those run server tools)")
        if when.images and not any(p.images for p in listed):
            errors.append(f"{where}: takes requests with images, but every provider it lists has images: false")
        if when.min_input_tokens is not None:
            contexts = [p.max_context for p in listed]
            if all(c is not None and c < when.min_input_tokens for c in contexts):
                errors.append(f"{where}: takes requests of at least {when.min_input_tokens} input tokens, but no "
                              f"provider it lists takes that many (max_context {max(c or 0 for c in contexts)})")
        if not any(p.enabled for p in listed):
            outcome = "go to the default route" if route.fallback else "fail (fallback is off)"
            warnings.append(f"{where}: every provider it lists is disabled: until one is enabled, the requests it "
                            f"takes {outcome}")
    return errors, warnings
