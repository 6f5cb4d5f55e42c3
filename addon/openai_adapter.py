"""OpenAI-type providers: the Anthropic request translated to Chat Completions, the answer (streamed or not)
translated back to Anthropic's messages, events and errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from . import json_codec
from .answer_body import one_chunk, read_answer
from .capabilities import describe_fixes
from .capability_errors import openai_fixes, recognised, sent_openai
from .config import ProviderConfig
from .exchange import Answer, Exchange, RetryWithout
from .health import OVERLOADED, STREAM_ERROR
from .model_map import ModelChoice, choose_model
from .openai_errors import to_anthropic_error
from .openai_request import OpenAIOptions, ToolNames, to_openai_request
from .openai_response import OpenAIResponseError, to_anthropic_message
from .openai_stream import StreamTranslator
from .request_fixes import openai_body_with
from .server_tools import dropped_tools
from .stream_events import Observers
from .stream_guard import Leftover, StreamFailure, guarded, hold_until_content
from .upstream import to_wire
from .usage_watch import UsageWatch

# Response headers of an OpenAI-type provider worth passing on to an Anthropic client.
_PASSED_ON = ("retry-after", "x-request-id", "request-id", "openrouter-provider")


def options_for(provider: ProviderConfig) -> OpenAIOptions:
    return OpenAIOptions(
        max_tokens_cap=provider.max_tokens_cap,
        stream_options=provider.stream_options,
        reasoning=provider.reasoning,
        merge_system_messages=provider.merge_system_messages,
    )


def _bearer(provider: ProviderConfig, client_headers: list[tuple[str, str]]) -> str | None:
    if provider.auth_type != "passthrough":
        return f"Bearer {provider.credential}"
    for name, value in client_headers:  # the client's own credential, in OpenAI's form
        if name.lower() == "authorization":
            return value
        if name.lower() == "x-api-key":
            return f"Bearer {value}"
    return None


@dataclass(frozen=True)
class Translation:
    """What one attempt's request translation decided, needed to translate its answer."""

    choice: ModelChoice
    names: ToolNames
    dropped: tuple[str, ...] = ()  # the client's tools the provider is not offered (server tools)


def build_request(provider: ProviderConfig, exchange: Exchange) -> tuple[httpx.Request, Translation]:
    assert exchange.parsed is not None and exchange.requested_model is not None
    choice = choose_model(exchange.requested_model, provider)
    parsed = json_codec.exact(exchange.body, exchange.parsed)
    body, names = to_openai_request(parsed, choice.model, options_for(provider))
    fixes = exchange.fixes_for(provider, choice.model)
    if fixes:
        body = openai_body_with(body, fixes)
    headers = {
        "content-type": "application/json",
        "accept": "text/event-stream" if exchange.stream else "application/json",
        "accept-encoding": "identity" if exchange.stream else "gzip, deflate",
    }
    bearer = _bearer(provider, exchange.client_headers)
    if bearer:
        headers["authorization"] = bearer
    headers.update(provider.extra_headers)
    content = json_codec.dumps(body)
    request = httpx.Request(
        "POST", provider.base_url + "/chat/completions", headers=to_wire(headers.items()), content=content
    )
    return request, Translation(choice, names, dropped_tools(exchange.parsed.get("tools"), body, names))


def _headers(response: httpx.Response, content_type: str, redact: Callable[[str], str]) -> list[tuple[str, str]]:
    passed = [(k, redact(v)) for k, v in response.headers.multi_items() if k.lower() in _PASSED_ON]
    return [("content-type", content_type), *passed]


async def _read_all(response: httpx.Response, exchange: Exchange, deadline: float) -> bytes:
    """The whole body; an answer (2xx) that breaks off before its end is a failure that can fail over."""
    body, complete = await read_answer(response, deadline, exchange.idle_timeout)
    if not complete and response.status_code < 300:
        raise StreamFailure("the answer broke off before its end")
    return body


@dataclass(frozen=True)
class OpenAICall:
    provider: ProviderConfig
    exchange: Exchange
    request: httpx.Request
    translation: Translation

    @property
    def choice(self) -> ModelChoice:
        return self.translation.choice

    async def open_answer(self, response: httpx.Response, deadline: float) -> Answer:
        """Raises StreamFailure when the answer fails before any content reached the client (fail over)."""
        answer = await self._open(response, deadline)
        answer.dropped_tools = self.translation.dropped
        return answer

    async def _open(self, response: httpx.Response, deadline: float) -> Answer:
        exchange, names = self.exchange, self.translation.names
        requested = exchange.requested_model or self.choice.model
        if response.status_code >= 300:
            raw = await _read_all(response, exchange, deadline)
            status, body = to_anthropic_error(response.status_code, raw)
            body = exchange.redact_body(body)
            answer = Answer(status, _headers(response, "application/json", exchange.redact), one_chunk(body), False,
                            whole=True)
            sent = sent_openai(json.loads(self.request.content))
            fixes = await recognised(openai_fixes, response.status_code, raw, sent)
            if fixes:  # a parameter the balancer added, refused: the request goes again without it
                exchange.fix(self.provider, self.choice.model, fixes)
                raise RetryWithout(answer, response.status_code, describe_fixes(fixes))
            return answer
        if not exchange.stream:
            raw = await _read_all(response, exchange, deadline)
            try:
                message = to_anthropic_message(json.loads(raw), requested, names)
            except (ValueError, AttributeError, TypeError) as exc:
                if isinstance(exc, OpenAIResponseError) or raw[:1] in (b"{", b"["):
                    status, body = to_anthropic_error(response.status_code, raw)
                    if status >= 500 or status == 429:
                        raise StreamFailure(f"error in a 200 answer: HTTP {status}", OVERLOADED) from None
                    return Answer(status, _headers(response, "application/json", exchange.redact),
                                  one_chunk(exchange.redact_body(body)), is_sse=False, whole=True)
                raise StreamFailure("the answer is not JSON", STREAM_ERROR) from None
            return Answer(200, _headers(response, "application/json", exchange.redact),
                          one_chunk(json.dumps(message).encode()), False, whole=True)
        # The translation is the stream's source of events: the same guard, observers and end as an Anthropic
        # provider's stream (the model is the requested one already).
        chunks = response.aiter_bytes()
        watch = UsageWatch(is_sse=True, shown_events=True)
        translator = StreamTranslator(requested, names, redact=exchange.redact)
        opening = await hold_until_content(chunks, deadline, translator, Observers(watch))
        leftover = Leftover()
        events = guarded(
            opening, chunks, lambda reason, kind: exchange.on_committed_failure(self.provider, reason, kind),
            exchange.idle_timeout, exchange.redact, leftover,
        )
        return Answer(200, _headers(response, "text/event-stream; charset=utf-8", exchange.redact), events, True,
                      watch, keepalive=exchange.keepalive, leftover=leftover)


class OpenAIAdapter:
    def prepare(self, provider: ProviderConfig, exchange: Exchange) -> OpenAICall:
        request, translation = build_request(provider, exchange)
        return OpenAICall(provider, exchange, request, translation)
