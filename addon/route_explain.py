"""Why a request goes where it goes: `POST /routes/explain` (an admin endpoint) and the text of `balancer.explain`.

Both take a Messages request, find its route and plan it exactly as a request would be planned now (route_plan.py),
but as a dry run: nothing is sent, no round-robin turn or random draw is used up, no health or key counter moves.
The answer names the route that matched, every condition of every route looked at with whether it held and what
the request was instead, and the providers in the order the request would try them, with the model each would be
asked for and why any other was left out.

The endpoint's body is a Messages request, judged with the caller's own headers and client key; or
`{"request": <Messages request>, "headers": {...}, "client": "<name>"}` to judge it as another client would send
it (`headers` then replaces the caller's). A header that holds a credential is never shown, only whether it is set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mitmproxy import http

from .access import client_of
from .affinity import SessionAffinity, session_key
from .attempt_marker import is_attempt_flow
from .flow_hygiene import client_headers
from .log_text import loggable
from .model_map import choose_model
from .providers import Providers
from .request_traits import RequestTraits, traits_of
from .responses import error_response, json_response
from .route_plan import RoutedPlan, RoutePlanner, count_if_needed, counted, preferred_on_routes, route_table
from .validation import request_problem

PATH = "/routes/explain"


def _traits_dict(traits: RequestTraits) -> dict[str, Any]:
    return {
        "model": traits.model, "model_tier": traits.tier, "thinking": traits.thinking,
        "input_tokens": traits.tokens_text(), "server_tools": list(traits.server_tools), "images": traits.images,
        "subagent": traits.subagent, "client": traits.client,
    }


def explanation(routed: RoutedPlan, traits: RequestTraits) -> dict[str, Any]:
    """What `POST /routes/explain` answers (plain data, no credential)."""
    plan = routed.plan
    order = [{"provider": p.name, "model": choose_model(traits.model, p).model, "state": "usable"}
             for p in plan.usable]
    order += [{"provider": p.name, "model": choose_model(traits.model, p).model, "state": "cooling down"}
              for p in plan.later]
    for entry in order:
        why = routed.last_resort.get(entry["provider"])
        if why is not None:
            entry["state"] += f", a last resort: {why}"
    return {
        "route": routed.match.name,
        "providers_of": routed.route,
        "fell_back": routed.fell_back,
        "refusal": routed.refusal,
        "request": _traits_dict(traits),
        "routes": [check.as_dict() for check in routed.match.checks],
        "order": order,
        "skipped": [{"provider": p.name, "reason": reason} for p, reason in plan.skipped],
        "hedge_after": routed.hedge_after,
    }


def explanation_text(answer: dict[str, Any]) -> str:
    """The explanation as lines for mitmproxy's command bar and log."""
    lines = [f"route: {answer['route']}" + (f" (fell back to {answer['providers_of']}: {answer['fell_back']})"
                                            if answer["fell_back"] else "")]
    for check in answer["routes"]:
        held = ", ".join(f"{c['condition']} {c['wanted']}: {'yes' if c['held'] else 'no'} ({c['request']})"
                         for c in check["conditions"]) or "no conditions"
        lines.append(f"  {check['route']}: {'matched' if check['matched'] else 'no'} - {held}")
    if answer["refusal"]:
        lines.append(f"refused: {answer['refusal']}")
    order = ", ".join(f"{e['provider']} ({e['model']}, {e['state']})" for e in answer["order"]) or "none"
    lines.append(f"order: {order}")
    if answer["skipped"]:
        lines.append("skipped: " + ", ".join(f"{s['provider']} ({s['reason']})" for s in answer["skipped"]))
    return "\n".join(loggable(line, limit=None) for line in lines)  # what a client wrote cannot forge a line


class RouteExplain:
    """Plans a request as a dry run: for the endpoint and the command."""

    def __init__(self, providers: Providers, planner: RoutePlanner, affinity: SessionAffinity):
        self.providers = providers
        self.planner = planner
        self.affinity = affinity

    def _plan(self, traits: RequestTraits, body: dict[str, Any], headers: Iterable[tuple[str, str]]) -> RoutedPlan:
        settings = self.providers.settings
        session = session_key(body, headers) if settings.affinity_in_force == "session" else None
        return self.planner.plan(
            self.providers.config, self.providers.board, settings, traits,
            preferred_on_routes(self.affinity, session), dry_run=True,
        )

    def explain_now(self, body: dict[str, Any], raw: bytes, headers: list[tuple[str, str]],
                    client: str | None) -> dict[str, Any]:
        """Counts the tokens here, when needed (the command; the endpoint counts in a thread)."""
        traits = count_if_needed(traits_of(body, headers, client), body, raw, route_table(self.providers.config))
        return explanation(self._plan(traits, body, headers), traits)

    def explain_flow(self, flow: http.HTTPFlow) -> str:
        """`balancer.explain`: the flow's request as the balancer would route it now."""
        if is_attempt_flow(flow):  # what a provider received: its model is already the mapped one
            return "cannot explain this flow: it is an attempt (what a provider received); explain its client's flow"
        body, problem = _messages_body(flow.request.get_content(strict=False) or b"")
        if body is None:
            return f"cannot explain this flow: {problem}"
        headers = list(client_headers(flow).items(multi=True))
        return explanation_text(self.explain_now(body, flow.request.get_content(strict=False) or b"", headers,
                                                 client_of(flow)))

    async def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live:
            return
        if flow.request.path.split("?", 1)[0] != PATH:
            return
        flow.metadata["balancer"] = {"admin": "explain"}
        if flow.request.method != "POST":
            flow.response = error_response(405, "invalid_request_error", f"{PATH} accepts POST only", allow="POST")
            return
        raw = flow.request.get_content(strict=False) or b""
        headers = list(client_headers(flow).items(multi=True))
        client = client_of(flow)
        outer, problem = _json_object(raw)
        if outer is not None and "request" in outer:  # a request as another client would send it
            names = [key.name for key in self.providers.settings.client_keys]
            wrapped = as_another_client(outer, headers, client, names)
            if isinstance(wrapped, str):
                flow.response = error_response(400, "invalid_request_error", wrapped)
                return
            outer, headers, client = wrapped
            raw = json.dumps(outer).encode()  # what the token bound reads the size of
        body, problem = (None, problem) if outer is None else _messages_problem(outer)
        if body is None:
            flow.response = error_response(400, "invalid_request_error", problem)
            return
        traits = await counted(traits_of(body, headers, client), body, raw, route_table(self.providers.config))
        flow.response = json_response(200, explanation(self._plan(traits, body, headers), traits))


WRAPPER_KEYS = ("request", "headers", "client")


def as_another_client(
    outer: dict[str, Any], headers: list[tuple[str, str]], client: str | None, client_names: list[str]
) -> tuple[dict[str, Any], list[tuple[str, str]], str | None] | str:
    """The request of `{"request": ..., "headers": {...}, "client": "<name>"}`, the headers and the client to judge it
    with (the caller's where the wrapper gives none); or what is wrong with the wrapper. A mistake in it is said,
    not passed over: an explanation for the wrong headers or client would mislead."""
    unknown = [str(key) for key in outer if key not in WRAPPER_KEYS]
    if unknown:
        return f"unknown key {unknown[0]!r} beside 'request' (the keys: {', '.join(WRAPPER_KEYS)})"
    if not isinstance(outer["request"], dict):
        return "request: a Messages request (a JSON object) is required"
    if "headers" in outer:
        given = outer["headers"]
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            return "headers: an object of header names to string values is required"
        headers = list(given.items())
    if "client" in outer:
        client = outer["client"]
        if client is not None and (not isinstance(client, str) or client not in client_names):
            known = ", ".join(client_names) or "none: settings.client_keys is empty"
            return f"client: {json.dumps(client)[:80]} is not a client key's name (the names: {known})"
    return outer["request"], headers, client


def _json_object(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None, "the body is not valid JSON: send a Messages request, or {\"request\": ..., \"headers\": ...}"
    if not isinstance(body, dict):
        return None, "the body must be a JSON object"
    return body, ""


def _messages_problem(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    problem = request_problem("messages", body)
    return (None, problem) if problem else (body, "")


def _messages_body(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    body, problem = _json_object(raw)
    return (None, problem) if body is None else _messages_problem(body)
