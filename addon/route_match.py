"""Which route takes a request: the first whose conditions all hold (pure, no I/O).

Every condition of every route looked at is checked (not only up to the first that fails), so that the log and
`POST /routes/explain` can say of each whether it held and what the request was instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from .request_traits import RequestTraits
from .route_config import DEFAULT_ROUTE, Route
from .upstream import is_secret_header


@dataclass(frozen=True)
class ConditionCheck:
    name: str
    wanted: str  # what the route asks, as written
    actual: str  # what the request is
    held: bool

    def as_dict(self) -> dict[str, Any]:
        return {"condition": self.name, "wanted": self.wanted, "request": self.actual, "held": self.held}


@dataclass(frozen=True)
class RouteCheck:
    route: str
    conditions: tuple[ConditionCheck, ...]

    @property
    def matched(self) -> bool:
        return all(check.held for check in self.conditions)

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "matched": self.matched,
                "conditions": [check.as_dict() for check in self.conditions]}


@dataclass(frozen=True)
class RouteMatch:
    route: Route | None  # None: no route matched, the default route (every provider) takes the request
    checks: tuple[RouteCheck, ...]  # each route looked at, in order, the matching one last

    @property
    def name(self) -> str:
        return self.route.name if self.route is not None else DEFAULT_ROUTE


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def _shown(header: str, value: str | None) -> str:
    if value is None:
        return "(absent)"
    return "(hidden)" if is_secret_header(header) else value  # a credential is never repeated


def _server_tools(wanted: bool | list[str], carried: tuple[str, ...]) -> bool:
    if isinstance(wanted, bool):
        return bool(carried) == wanted
    # A type names its versions too: `web_search` takes web_search_20250305.
    return any(fnmatchcase(kind, glob) or fnmatchcase(kind, f"{glob}_*") for kind in carried for glob in wanted)


def check_condition(name: str, wanted: Any, traits: RequestTraits) -> ConditionCheck:
    """One condition of a route against the request."""
    actual: str
    held: bool
    if name == "model_tier":
        actual, held = traits.tier, traits.tier == wanted
    elif name == "model":
        actual, held = traits.model, fnmatchcase(traits.model.lower(), str(wanted).lower())
    elif name == "thinking":
        actual, held = _word(traits.thinking), traits.thinking == wanted
    elif name == "min_input_tokens":
        at_least = traits.tokens_at_least(int(wanted))
        actual, held = traits.tokens_text(), bool(at_least)
    elif name == "server_tools":
        actual, held = _word(list(traits.server_tools)) or "none", _server_tools(wanted, traits.server_tools)
    elif name == "images":
        actual, held = _word(traits.images), traits.images == wanted
    elif name == "subagent":
        actual, held = _word(traits.subagent), traits.subagent == wanted
    elif name == "header":
        values = {header: traits.headers.get(header) for header in wanted}
        actual = ", ".join(f"{header}: {_shown(header, value)}" for header, value in values.items())
        held = all(value is not None and fnmatchcase(value, wanted[header]) for header, value in values.items())
        wanted = ", ".join(f"{header}: {glob}" for header, glob in wanted.items())
    elif name == "client":
        actual, held = traits.client or "(no client key)", traits.client == wanted
    else:  # the schema knows no other condition
        raise ValueError(f"unknown condition {name!r}")
    return ConditionCheck(name, _word(wanted), actual, held)


def check_route(route: Route, traits: RequestTraits) -> RouteCheck:
    return RouteCheck(route.name, tuple(check_condition(name, wanted, traits)
                                        for name, wanted in route.when.conditions()))


def match_route(routes: Sequence[Route], traits: RequestTraits) -> RouteMatch:
    """The first route whose conditions all hold (a route without conditions takes every request), with the check
    of each route looked at; no match: the default route."""
    checks: list[RouteCheck] = []
    for route in routes:
        check = check_route(route, traits)
        checks.append(check)
        if check.matched:
            return RouteMatch(route, tuple(checks))
    return RouteMatch(None, tuple(checks))
