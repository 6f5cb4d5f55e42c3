"""Anthropic-type providers: the request as the client sent it (model mapped, credential replaced); the answer
as the provider sent it (model echoed, stream held to its commit point and guarded after it)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from . import json_codec
from .answer_body import one_chunk, read_answer
from .capabilities import Fix, describe_fixes
from .capability_errors import FIXABLE_STATUSES, anthropic_fixes, recognised, sent_anthropic
from .config import ProviderConfig
from .errors import bounded_error_body
from .exchange import Answer, Exchange, RetryWithout
from .message_shape import message_problem
from .model_echo import ModelEcho, echo_model_in_body, echo_model_in_stream
from .model_map import ModelChoice, choose_model
from .request_fixes import anthropic_body_with, headers_without_betas
from .stream_events import Observers
from .stream_guard import Leftover, StreamFailure, guarded, hold_until_content
from .translated_thinking import without_translated_thinking
from .upstream import answer_headers, parsed_url, to_wire, upstream_headers, upstream_url
from .usage_watch import UsageWatch


def build_request(provider: ProviderConfig, exchange: Exchange) -> tuple[httpx.Request, ModelChoice | None]:
    content, choice = exchange.body, None
    fixes: frozenset[Fix] = frozenset()
    if exchange.parsed is not None and exchange.requested_model is not None:
        choice = choose_model(exchange.requested_model, provider)
        fixes = exchange.fixes_for(provider, choice.model)
        translated = exchange.may_hold_translated_thinking()
        if fixes or translated:  # rare: the body is written out again
            parsed = json_codec.exact(exchange.body, exchange.parsed)
            parsed = without_translated_thinking(parsed) if translated else parsed
            content = json_codec.dumps({**anthropic_body_with(parsed, fixes), "model": choice.model})
        else:
            content = exchange.body_for(choice.model)
    header_list = upstream_headers(exchange.client_headers, provider, exchange.stream)
    headers = to_wire(headers_without_betas(header_list, fixes) if fixes else header_list)
    request = httpx.Request(
        exchange.method, parsed_url(upstream_url(provider, exchange.path)), headers=headers, content=content
    )
    return request, choice


@dataclass(frozen=True)
class AnthropicCall:
    provider: ProviderConfig
    exchange: Exchange
    request: httpx.Request
    choice: ModelChoice | None

    async def open_answer(self, response: httpx.Response, deadline: float) -> Answer:
        """Raises StreamFailure when the answer fails before anything reached the client (the request can still
        fail over): a stream before its first content, or a message answer (2xx) that is not a complete message."""
        exchange = self.exchange
        content_type = response.headers.get("content-type", "")
        is_sse = content_type.startswith("text/event-stream")
        chunks = response.aiter_bytes()
        echoed = self._echoed_model()
        # A 2xx answer to /v1/messages must be a message unless it is the stream the client asked for.
        must_be_message = exchange.kind == "messages" and 200 <= response.status_code < 300 and not (
            exchange.stream and is_sse
        )
        # An error answer is read whole too, whatever content type it claims: it is redacted and bounded.
        whole = must_be_message or response.status_code >= 400 or (not is_sse and exchange.parsed is not None)
        if whole:
            # A whole JSON answer is read here, so that one breaking off can still fail over (mitmproxy would
            # buffer it anyway): never a truncated body, never mitmproxy's own 502. Errors of the other endpoints
            # too: they are redacted and bounded like any other.
            body, complete = await read_answer(response, deadline, exchange.idle_timeout)
            if not complete:
                raise StreamFailure("the answer broke off before its end")
            if must_be_message:
                problem = message_problem(body)
                if problem is not None:
                    raise StreamFailure(*problem)
            if response.status_code >= 400:
                chunks = one_chunk(bounded_error_body(exchange.redact_body(body)))
                await self._retry_if_fixable(response, body, Answer(
                    response.status_code, answer_headers(response, exchange.redact), chunks, is_sse, whole=True
                ))
            else:
                chunks = one_chunk(body)
        elif exchange.stream and is_sse and response.status_code < 300:
            # The stream the client asked for: its events are read once, by the guard, and shown to the watch
            # and the model echo.
            watch = UsageWatch(is_sse, shown_events=True)
            observers = Observers(ModelEcho(echoed), watch) if echoed else Observers(watch)
            opening = await hold_until_content(chunks, deadline, observers=observers)
            leftover = Leftover()
            guarded_chunks = guarded(
                opening,
                chunks,
                lambda reason, kind: exchange.on_committed_failure(self.provider, reason, kind),
                exchange.idle_timeout,
                exchange.redact,
                leftover,
            )
            return Answer(response.status_code, answer_headers(response, exchange.redact), guarded_chunks, is_sse,
                          watch, keepalive=exchange.keepalive, leftover=leftover)
        if echoed:
            if is_sse:
                chunks = echo_model_in_stream(chunks, echoed)
            elif content_type.startswith("application/json"):
                chunks = echo_model_in_body(chunks, echoed)
        return Answer(response.status_code, answer_headers(response, exchange.redact), chunks, is_sse, whole=whole)

    async def _retry_if_fixable(self, response: httpx.Response, body: bytes, answer: Answer) -> None:
        """Raises RetryWithout when the provider refused a beta flag, a body field or the conversation's thinking
        signatures, by name, that the request can do without."""
        exchange = self.exchange
        if response.status_code not in FIXABLE_STATUSES or exchange.kind not in ("messages", "count_tokens"):
            return
        try:
            sent_body = json.loads(self.request.content)
        except (ValueError, RecursionError):
            return
        sent = sent_anthropic(sent_body if isinstance(sent_body, dict) else None, self.request.headers.multi_items())
        fixes = await recognised(anthropic_fixes, response.status_code, body, sent)
        if fixes:
            exchange.fix(self.provider, self.choice.model if self.choice else None, fixes)
            raise RetryWithout(answer, response.status_code, describe_fixes(fixes))

    def _echoed_model(self) -> str | None:
        """The model the client asked for, when the provider is asked for another (answers carry the former)."""
        requested = self.exchange.requested_model
        if self.choice is not None and requested and self.choice.model != requested:
            return requested
        return None


class AnthropicAdapter:
    def prepare(self, provider: ProviderConfig, exchange: Exchange) -> AnthropicCall:
        request, choice = build_request(provider, exchange)
        return AnthropicCall(provider, exchange, request, choice)
