"""OpenAI-type providers: the Anthropic request translated to Chat Completions, the answer (streamed or not)
translated back to Anthropic's messages, events and errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from .anthropic_events import error_of, failure_class_of
from .answer_body import one_chunk, read_answer
from .config import ProviderConfig
from .error_text import REASON_CHARS
from .errors import bounded_message
from .exchange import Answer, Exchange
from .health import OVERLOADED, STREAM_ERROR
from .model_map import ModelChoice, choose_model
from .openai_errors import to_anthropic_error
from .openai_request import OpenAIOptions, ToolNames, to_openai_request
from .openai_response import OpenAIResponseError, to_anthropic_message
from .openai_stream import StreamTranslator
from .sse import SSESplitter
from .stream_guard import StreamFailure, broke_off_reason, next_chunk_before
from .upstream import json_bytes, to_wire

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
        return f"Bearer {provider.auth_value}"
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


def build_request(provider: ProviderConfig, exchange: Exchange) -> tuple[httpx.Request, Translation]:
    assert exchange.parsed is not None and exchange.requested_model is not None
    choice = choose_model(exchange.requested_model, provider)
    body, names = to_openai_request(exchange.parsed, choice.model, options_for(provider))
    headers = {
        "content-type": "application/json",
        "accept": "text/event-stream" if exchange.stream else "application/json",
        "accept-encoding": "identity" if exchange.stream else "gzip, deflate",
    }
    bearer = _bearer(provider, exchange.client_headers)
    if bearer:
        headers["authorization"] = bearer
    headers.update(provider.extra_headers)
    content = json_bytes(body)
    request = httpx.Request(
        "POST", provider.base_url + "/chat/completions", headers=to_wire(headers.items()), content=content
    )
    return request, Translation(choice, names)


def _headers(response: httpx.Response, content_type: str, redact: Callable[[str], str]) -> list[tuple[str, str]]:
    passed = [(k, redact(v)) for k, v in response.headers.multi_items() if k.lower() in _PASSED_ON]
    return [("content-type", content_type), *passed]


def _error_reason(events: bytes, when: str = "before content") -> tuple[str, str]:
    """(reason, failure class) from the Anthropic `event: error` a translator produced."""
    for event in SSESplitter().feed(events):
        if event.event == "error":
            try:
                kind, message = error_of(json.loads(event.data))
            except (ValueError, TypeError, AttributeError):
                kind, message = "", ""
            kind = kind or "api_error"
            return bounded_message(f"error {when}: {kind}: {message}", REASON_CHARS), failure_class_of(kind)
    return "stream ended before any content", STREAM_ERROR


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
        exchange, names = self.exchange, self.translation.names
        requested = exchange.requested_model or self.choice.model
        if response.status_code >= 300:
            status, body = to_anthropic_error(response.status_code, await _read_all(response, exchange, deadline))
            body = exchange.redact_body(body)
            return Answer(status, _headers(response, "application/json", exchange.redact), one_chunk(body), False)
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
                                  one_chunk(exchange.redact_body(body)), is_sse=False)
                raise StreamFailure("the answer is not JSON", STREAM_ERROR) from None
            return Answer(200, _headers(response, "application/json", exchange.redact),
                          one_chunk(json.dumps(message).encode()), False)
        translator = StreamTranslator(requested, names, redact=exchange.redact)
        chunks = response.aiter_bytes()
        held = await _hold(translator, chunks, deadline)
        events = _translated(
            held, translator, chunks, lambda reason, kind: exchange.on_committed_failure(self.provider, reason, kind),
            exchange.idle_timeout,
        )
        return Answer(200, _headers(response, "text/event-stream; charset=utf-8", exchange.redact), events, True)


class OpenAIAdapter:
    def prepare(self, provider: ProviderConfig, exchange: Exchange) -> OpenAICall:
        request, translation = build_request(provider, exchange)
        return OpenAICall(provider, exchange, request, translation)


async def _hold(translator: StreamTranslator, chunks: AsyncIterator[bytes], deadline: float) -> bytes:
    """Translate until the first content block (the commit point); a failure before it raises StreamFailure."""
    out: list[bytes] = []
    while not translator.started_content:
        chunk = await next_chunk_before(chunks, deadline)
        if chunk is None:
            out.append(translator.finish())
            produced = b"".join(out)
            if b"event: error" in produced or not produced:
                raise StreamFailure(*_error_reason(produced))
            return produced  # a complete answer without content blocks
        out.append(translator.feed(chunk))
        if translator.done and not translator.started_content:
            produced = b"".join(out)
            if b"event: error" in produced:
                raise StreamFailure(*_error_reason(produced))
            return produced
    return b"".join(out)


async def _translated(
    held: bytes,
    translator: StreamTranslator,
    chunks: AsyncIterator[bytes],
    on_failure: Callable[[str, str], None],
    idle_timeout: float,
) -> AsyncIterator[bytes]:
    """The held opening, then the provider's chunks translated as they come; any failure after the commit
    point ends the stream with an Anthropic `event: error` and is reported through `on_failure`."""
    if translator.done and b"event: error" in held:  # content, then an error, all in the first chunks
        on_failure(*_error_reason(held, "mid-stream"))
    yield held
    if translator.done:
        return
    failure: str | None = None
    try:
        async for chunk in chunks:
            out = translator.feed(chunk)
            if translator.done and b"event: error" in out:  # the provider reported an error mid-stream
                on_failure(*_error_reason(out, "mid-stream"))
            if out:
                yield out
            if translator.done:
                return
    except (httpx.HTTPError, OSError) as exc:
        failure = broke_off_reason(exc, idle_timeout)
    tail = translator.fail(failure) if failure else translator.finish()
    if failure:
        on_failure(failure, STREAM_ERROR)
    elif b"event: error" in tail:
        on_failure(*_error_reason(tail, "mid-stream"))
    if tail:
        yield tail
