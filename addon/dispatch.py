"""One API request to the providers: its body read and checked, the providers planned and tried in turn through
their adapters, and what came of it -- an answer the balancer gives by itself, or a provider's answer to relay."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from mitmproxy import http

from . import exhaustion, flow_hygiene
from .affinity import SessionAffinity, session_key
from .anthropic_adapter import AnthropicAdapter
from .config import ProviderConfig
from .early_upload import EarlyUpload, ServedBefore, start_early_upload
from .exchange import Answer, Exchange, ProviderAdapter, ProviderCall
from .failover import Exhausted, Success, attempt_in_turn, record_failure
from .flow_record import AttemptSummary, FlowRecord
from .local_count import LOCAL_PROVIDER, counts_after_asking, counts_before_asking, local_count
from .log_text import loggable
from .model_map import ModelChoice
from .openai_adapter import OpenAIAdapter
from .providers import Providers
from .redact import client_secrets, with_secrets
from .request_body import parse_json_object
from .request_traits import traits_of
from .responses import error_response
from .route_config import DEFAULT_ROUTE
from .route_plan import RoutedPlan, RoutePlanner, affinity_on, counted, preferred_on_routes, route_table
from .routing import Plan, Router
from .upstream import ClientPool
from .validation import request_problem

log = logging.getLogger("balancer")

ADAPTERS: dict[str, ProviderAdapter] = {"anthropic": AnthropicAdapter(), "openai": OpenAIAdapter()}

# Kinds of API request: messages are balanced with failover and health accounting; the rest are forwarded
# with failover but never count against a provider.
MESSAGES, COUNT_TOKENS, OTHER_API = "messages", "count_tokens", "api"
MESSAGE_ROUTES = frozenset({"/v1/messages", "/v1/messages/count_tokens"})


def route_of(method: str, path: str) -> tuple[str | None, str | None]:
    """(kind, None) for a request the gateway serves, (None, error) for a wrong method, (None, None) otherwise."""
    route = path.split("?", 1)[0]
    if route in MESSAGE_ROUTES:
        if method != "POST":
            return None, f"{route} accepts POST only"
        return (MESSAGES if route == "/v1/messages" else COUNT_TOKENS), None
    if route.startswith("/v1/"):
        if method == "HEAD":  # the relay hop and the providers' answers carry bodies: never forwarded
            return None, "HEAD is answered only on the balancer's own endpoints"
        return OTHER_API, None
    return None, None


def client_gone(flow: http.HTTPFlow) -> bool:
    # While a hook runs, mitmproxy keeps the flow live; only the client connection's end time says it left.
    return flow.client_conn.timestamp_end is not None


@dataclass(frozen=True)
class Reply:
    """The balancer answers by itself: a request it refuses, a local count, no provider that served it."""

    response: http.Response
    comment: str | None = None  # what the flow says about it


@dataclass(frozen=True)
class Served:
    """A provider's answer, to relay."""

    result: Success
    choice: ModelChoice | None  # the model the serving provider was asked for


class Dispatcher:
    def __init__(self, providers: Providers, pool: ClientPool, router: Router, affinity: SessionAffinity):
        self.providers = providers
        self.pool = pool
        self.router = router
        self.affinity = affinity
        self.planner = RoutePlanner(router)
        self.served_before = ServedBefore()

    async def dispatch(self, flow: http.HTTPFlow, record: FlowRecord) -> Reply | Served:
        body = flow.request.get_content(strict=False) or b""
        client_headers = [(k, v) for k, v in flow_hygiene.client_headers(flow).items(multi=True)]
        early = None
        if record.kind == MESSAGES:
            early = start_early_upload(self.providers, self.pool, self.served_before, record.client,
                                       flow.request.method, flow.request.path, client_headers, body)
        try:
            return await self._dispatch(flow, record, body, client_headers, early)
        finally:
            if early is not None:
                record.early_upload = (early.provider, early.over())

    async def _dispatch(
        self, flow: http.HTTPFlow, record: FlowRecord, body: bytes, client_headers: list[tuple[str, str]],
        early: EarlyUpload | None,
    ) -> Reply | Served:
        kind = record.kind
        parsed: dict[str, Any] | None = None
        requested: str | None = None
        model_span: tuple[int, int] | None = None
        if kind != OTHER_API:
            parsed, body, problem, model_span = await parse_json_object(flow)
            if problem is None and parsed is not None:
                problem = request_problem(kind, parsed)
            if problem or parsed is None:
                return Reply(error_response(400, "invalid_request_error", problem or "no request body"))
            requested = parsed["model"]
        stream = kind == MESSAGES and bool(parsed and parsed.get("stream") is True)
        record.requested_model, record.stream = requested, stream

        settings = self.providers.settings
        board = self.providers.board
        redact = record.redact = self._redactor(client_headers)
        session = session_key(parsed, client_headers)  # also keeps a session on one key of a pool
        affinity_key = session if settings.affinity_in_force == "session" else None
        routed: RoutedPlan | None = None
        if kind == MESSAGES and parsed is not None:
            routed = await self._route(record, parsed, body, client_headers, affinity_key)
            if routed.refusal is not None:
                return Reply(error_response(400, "invalid_request_error", routed.refusal), routed.refusal)
            plan = routed.plan
            if routed.hedge_after is not None:  # the route's own (False: no hedging)
                settings = settings.model_copy(update={"hedge_after": routed.hedge_after or None})
        else:
            # Other endpoints exist only at Anthropic-type providers.
            plan = self.router.plan(self.providers.config.providers, board, settings, types=("anthropic",),
                                    preferred=self.affinity.provider_for(affinity_key))
        penalize = kind == MESSAGES
        if kind == COUNT_TOKENS:
            if counts_before_asking(settings, plan):
                return await self._count_locally(record, parsed)
            # A count is quick or not worth waiting for; it never cools a provider down (penalize is off).
            settings = settings.model_copy(update={"request_timeout": settings.count_tokens_timeout,
                                                   "first_content_timeout": settings.count_tokens_timeout})

        exchange = Exchange(
            kind=kind, method=flow.request.method, path=flow.request.path, client_headers=client_headers,
            body=body, parsed=parsed, requested_model=requested, stream=stream,
            idle_timeout=settings.stream_idle_timeout, keepalive=settings.stream_keepalive,
            on_committed_failure=self._committed_failure_handler(flow, record, penalize),
            redact=redact, capabilities=self.providers.capabilities, model_span=model_span,
        )
        if early is not None:
            early.lend(exchange)
        calls: dict[str, ProviderCall] = {}  # per provider: the call its adapter prepared

        def build(provider: ProviderConfig) -> httpx.Request:
            call = calls[provider.name] = ADAPTERS[provider.type].prepare(provider, exchange)
            if early is not None:
                early.attach(provider, call.request)
            return call.request

        async def open_answer(provider: ProviderConfig, response: httpx.Response, deadline: float) -> Answer:
            answer = await calls[provider.name].open_answer(response, deadline)
            if answer.status < 400:
                exchange.confirm(provider)  # what it refused earlier in this request is learned now
            return answer

        if kind != MESSAGES and settings.hedge_after is not None:
            settings = settings.model_copy(update={"hedge_after": None})  # a count or a file is never worth two
        def attempts_of(plan: Plan) -> Awaitable[Success | Exhausted]:
            return attempt_in_turn(
                plan, build, self.pool, board, settings, open_answer, penalize,
                redact=redact, client_gone=lambda: client_gone(flow),
                capture=settings.attempt_body_limit if record.attempt_flows != "none" else None,
                keys=self.providers.keys, session=session,
            )

        result = await attempts_of(plan)
        if isinstance(result, Exhausted) and not result.client_gone and routed is not None:
            again = self.planner.after_failure(
                routed, self.providers.config, board, self.providers.settings,
                preferred_on_routes(self.affinity, affinity_key),
                {attempt.provider for attempt in result.attempts}, result.summary(routed.route),
            )
            if again is not None:  # the route's providers all failed: the default route's turn (fallback: true)
                routed, before = again, result
                record.route, record.fell_back = again.route, again.fell_back
                result = await attempts_of(again.plan)
                result.attempts[:0] = before.attempts
        if isinstance(result, Success) and result.key is not None:
            record.key_subject = result.key.subject  # open until the flow is over
        record.attempts = [AttemptSummary.of(attempt) for attempt in result.attempts]
        if routed is not None:
            record.skipped = routed.not_tried({attempt.provider for attempt in result.attempts}, board)
        record.wires = [attempt.wire for attempt in result.attempts]
        if kind == COUNT_TOKENS and counts_after_asking(settings, result):
            if isinstance(result, Success):
                await result.response.aclose()
            return await self._count_locally(record, parsed)
        if isinstance(result, Exhausted):
            return self._exhausted(result, routed.route if routed is not None else None)
        choice = calls[result.provider.name].choice
        if choice is not None and not choice.tier_known and choice.model != requested:
            log.warning("model '%s' matches no tier (opus/sonnet/haiku); %s's big_model %r was used",
                        loggable(requested), result.provider.name, choice.model)
        if kind == MESSAGES and requested is not None:
            self.served_before.remember(record.client, requested, result.provider.name)
        if penalize:
            # Kept per route: on the route the request took in the end (the default one after a fallback).
            self.affinity.remember(affinity_on(affinity_key, routed.route) if routed else affinity_key,
                                   result.provider.name)
        return Served(result, choice)

    def _redactor(self, client_headers: list[tuple[str, str]]) -> Callable[[str], str]:
        """The providers' redactor; with a passthrough provider configured, one that also knows the client's own
        credentials, which such a provider receives and may echo in its errors."""
        base = self.providers.redact
        if not any(p.auth_type == "passthrough" for p in self.providers.config.providers):
            return base
        extra = client_secrets(client_headers)
        return with_secrets(base, extra) if extra else base

    async def _route(
        self, record: FlowRecord, parsed: dict[str, Any], body: bytes, client_headers: list[tuple[str, str]],
        affinity_key: str | None,
    ) -> RoutedPlan:
        """The request's route and plan (route_plan.py), noted on its record for the log line and the flow."""
        config, providers = self.providers.config, self.providers
        table = route_table(config)
        traits = traits_of(parsed, client_headers, record.client, images=table.looks_at_images)
        traits = await counted(traits, parsed, body, table)
        routed = self.planner.plan(config, providers.board, providers.settings, traits,
                                   preferred_on_routes(self.affinity, affinity_key))
        if config.routes:
            record.route, record.fell_back = routed.route, routed.fell_back
        record.skipped = routed.not_tried(set())
        return routed

    def _committed_failure_handler(
        self, flow: http.HTTPFlow, record: FlowRecord, penalize: bool
    ) -> Callable[[ProviderConfig, str, str], None]:
        """What happens when the serving provider fails after its stream reached the client: the flow and its
        record say so, and (for messages) it counts against the provider."""

        def on_committed_failure(provider: ProviderConfig, reason: str, failure_kind: str) -> None:
            if flow.error is not None or client_gone(flow):
                return  # the stream broke because the client left and the balancer closed it: nobody's failure
            reason = (record.redact or self.providers.redact)(reason)
            log.warning("%s failed after its stream was committed: %s", provider.name, loggable(reason))
            record.fail_after_commit(provider.name, reason, failure_kind)
            flow.comment = f"{flow.comment}, then failed: {reason}" if flow.comment else f"failed: {reason}"
            if penalize:
                record_failure(self.providers.board, self.providers.settings, provider.name, reason, failure_kind)

        return on_committed_failure

    async def _count_locally(self, record: FlowRecord, parsed: dict[str, Any] | None) -> Reply:
        response = await local_count(parsed)
        record.provider = LOCAL_PROVIDER
        return Reply(response)

    def _exhausted(self, result: Exhausted, route: str | None = None) -> Reply:
        if result.client_gone:
            # Nobody will read it; it only keeps the flow from going on to mitmproxy's reverse target.
            return Reply(error_response(503, "api_error", "the client left before an answer"),
                         "the client left while providers were tried")
        answer = exhaustion.answer_for(result, self.providers.board)
        summary = result.summary(route if route != DEFAULT_ROUTE else None)
        return Reply(
            error_response(answer.status, answer.error_type, summary, **{"retry-after": str(answer.retry_after)}),
            summary,
        )
