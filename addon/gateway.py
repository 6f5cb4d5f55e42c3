"""API requests (`/v1/...`) go to providers: tried in turn, the answer streamed back through the relay."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import certifi
import httpx
from mitmproxy import ctx, http
from mitmproxy.net.http import url as mitmproxy_url

from . import exhaustion, flow_hygiene
from .affinity import SessionAffinity, session_key
from .anthropic_adapter import AnthropicAdapter
from .config import ProviderConfig
from .exchange import Answer, Exchange, ProviderAdapter, ProviderCall
from .failover import CLIENT_GONE, Exhausted, Success, attempt_in_turn, record_failure
from .log_text import loggable
from .model_map import ModelChoice
from .openai_adapter import OpenAIAdapter
from .providers import Providers
from .redact import REDACTED
from .relay import DEFERRED, RELAYED, HandOff, RelayServer
from .request_log import REQUEST_FIELD, summary_line
from .responses import PROVIDER_HEADER, error_response
from .routing import Router
from .token_count import count_input_tokens, warm_up
from .upstream import ClientPool, is_secret_header
from .usage_watch import UsageWatch, watched
from .validation import request_problem

log = logging.getLogger("balancer")

DEBUG_PAYLOAD_LIMIT = 8192  # bytes of a request body shown at log_level DEBUG

ADAPTERS: dict[str, ProviderAdapter] = {"anthropic": AnthropicAdapter(), "openai": OpenAIAdapter()}
MESSAGE_TYPES = ("anthropic", "openai")

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


@dataclass
class FlowRecord:
    """What the balancer did with one flow (kept in `flow.metadata["balancer"]`, shown by mitmweb)."""

    request_id: str
    kind: str
    path: str
    requested_model: str | None = None
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    provider: str | None = None
    model: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    handoff: HandOff | None = None  # where the relay holds the provider's answer
    sent: dict[str, Any] | None = None  # the request as the provider received it (credentials redacted)
    watch: UsageWatch | None = None
    answered_at: float | None = None  # when the balancer answered by itself
    failed_mid_stream: bool = False  # the serving provider failed after its stream was committed

    def fail_after_commit(self, provider: str, reason: str, kind: str) -> None:
        """The serving provider's attempt failed after all, once its stream had reached the client."""
        self.failed_mid_stream = True
        for attempt in reversed(self.attempts):
            if attempt["provider"] == provider and not attempt["failed"]:
                attempt.update(outcome=f"{attempt['outcome']}, then {kind}: {reason}", failed=True,
                               after_commit=True, **{"class": kind})
                return

    def as_metadata(self, status: int | str | None = None) -> dict[str, Any]:
        now = time.perf_counter()
        if self.failed_mid_stream:  # the client got its status line, then an error event (and may have left)
            status = "failed mid-stream"
        first_byte = self.watch.first_byte_at if self.watch else self.answered_at
        return {
            "request_id": self.request_id,
            "kind": self.kind,
            "path": self.path,
            "requested_model": self.requested_model,
            "provider": self.provider,
            "model": self.model,
            "stream": self.stream,
            "status": status,
            "attempts": self.attempts,
            "ttfb_ms": round((first_byte - self.started) * 1000, 1) if first_byte else None,
            "total_ms": round((now - self.started) * 1000, 1),
            "usage": dict(self.watch.usage) if self.watch and self.watch.usage else None,
            "stop_reason": self.watch.stop_reason if self.watch else None,
        }


def _parse_json_object(flow: http.HTTPFlow) -> tuple[dict[str, Any] | None, bytes, str | None]:
    try:
        body = flow.request.get_content(strict=True) or b""
    except ValueError:
        return None, b"", "the request body's content-encoding could not be decoded"
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None, body, "the request body is not valid JSON (or nested too deeply)"
    if not isinstance(parsed, dict):
        return None, body, "the request body must be a JSON object"
    return parsed, body, None


@functools.lru_cache(maxsize=256)  # providers have a few URLs; clients choose paths, so the memory is bounded
def _url_parts(url: str) -> tuple[str, str, int, str]:
    """mitmproxy's parse of a URL (scheme, host, port, path), remembered."""
    return mitmproxy_url.parse(url)


def _client_gone(flow: http.HTTPFlow) -> bool:
    # While a hook runs, mitmproxy keeps the flow live; only the client connection's end time says it left.
    return flow.client_conn.timestamp_end is not None


TLS_OPTIONS = ("ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir")


def provider_tls(insecure: bool | None, ca_file: str | None, ca_dir: str | None) -> bool | ssl.SSLContext:
    """Certificates are verified (against certifi's roots, like mitmproxy), plus a custom CA file or folder
    when mitmproxy is given one; `ssl_insecure` turns verification off."""
    if insecure:
        return False
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file or ca_dir:
        context.load_verify_locations(cafile=ca_file or None, capath=ca_dir or None)
    return context


class Gateway:
    def __init__(self, providers: Providers):
        self.providers = providers
        self.relay = RelayServer()
        self.pool = ClientPool()
        self.router = Router()
        self._tls_key: tuple | None = None
        self.affinity = SessionAffinity()
        # Flows whose answer is being relayed, by flow id (flow.metadata only holds plain data).
        self._records: dict[str, FlowRecord] = {}

    def runtime_status(self) -> dict[str, Any]:
        return {"open_streams": self.relay.open_count, "sessions": len(self.affinity)}

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def running(self) -> None:
        await self.relay.start()
        # The token vocabulary, in the background: start-up must not wait for it (nor fail on it).
        self._warm_up = asyncio.create_task(asyncio.to_thread(warm_up))

    async def done(self) -> None:
        await self.relay.stop()
        await self.pool.aclose()

    async def _sync_pool(self) -> None:
        """mitmproxy's upstream TLS options apply to the addon's own provider connections too."""
        options = ctx.options
        key = tuple(getattr(options, name, None) for name in TLS_OPTIONS)
        if key != self._tls_key:
            await self.pool.reconfigure(provider_tls(*key))
            self._tls_key = key  # only once it took effect: a failed set-up (no descriptor free) is tried again

    # -- hooks -----------------------------------------------------------------------------------------------
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        kind, wrong_method = route_of(flow.request.method, flow.request.path)
        if wrong_method:
            messages_route = flow.request.path.split("?", 1)[0] in MESSAGE_ROUTES
            allow = "POST" if messages_route else "GET, POST, DELETE"
            flow.response = error_response(405, "invalid_request_error", wrong_method, allow=allow)
            return
        if kind is None:
            return  # not an API path: another addon's, or the fallback's 404
        record = self._records[flow.id] = FlowRecord(
            request_id=flow.id[:8], kind=kind, path=flow.request.path.split("?", 1)[0]
        )
        if self.providers.startup_error:
            self._answer(flow, record, error_response(
                503, "api_error", f"the balancer has no usable configuration: {self.providers.startup_error}"
            ))
            return
        try:
            await self._sync_pool()
            await self._dispatch(flow, record)
        except Exception:
            # A bug must never let the request fall through to mitmproxy's reverse target with the client's key.
            log.exception("req %s: internal error", record.request_id)
            if flow.live and not flow.response and not flow.metadata.get(RELAYED):
                self._answer(flow, record, error_response(500, "api_error", "internal error in the balancer"))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        record = self._records.get(flow.id)
        if record is None or record.handoff is None or flow.response is None:
            return
        if record.stream and flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            flow.response.stream = record.handoff.stream or True
        elif record.handoff.stream is not None:
            # Not streamed: mitmproxy reads the whole answer, the relay must not wait for it to be passed on.
            record.handoff.stream.release()
        # From here on the flow shows the request as the provider received it, not the hop to the relay.
        sent = record.sent or {}
        # What `flow.request.url = sent["url"]` does, with the URL parsed once per URL, not once per request.
        flow.request.scheme, flow.request.host, flow.request.port, flow.request.path = _url_parts(sent["url"])
        flow.request.headers = http.Headers([(k.encode(), v) for k, v in sent["headers"]])
        flow.request.raw_content = sent["body"]

    def response(self, flow: http.HTTPFlow) -> None:
        record = self._records.pop(flow.id, None)
        if record is not None:
            self._finish(flow, record, flow.response.status_code if flow.response else None)

    async def error(self, flow: http.HTTPFlow) -> None:
        record = self._records.pop(flow.id, None)
        if record is None:
            return
        if record.handoff is not None:
            await self.relay.discard(record.handoff.token)
        left = flow.error is not None and "client disconnected" in str(flow.error).lower()
        self._finish(flow, record, CLIENT_GONE if left else "error")

    def _finish(self, flow: http.HTTPFlow, record: FlowRecord, status: int | str | None) -> None:
        """The flow is over: its metadata gets the final figures, and the log its one line."""
        if record.watch is not None and isinstance(status, str):  # the body did not run to its end
            record.watch.finish()
        metadata = record.as_metadata(status)
        flow.metadata["balancer"] = metadata
        log.info(summary_line(metadata), extra={REQUEST_FIELD: metadata})

    def _answer(self, flow: http.HTTPFlow, record: FlowRecord, response: http.Response) -> None:
        """The balancer answers by itself (an error, a local count)."""
        record.answered_at = time.perf_counter()
        flow.response = response

    # -- dispatching -----------------------------------------------------------------------------------------
    async def _dispatch(self, flow: http.HTTPFlow, record: FlowRecord) -> None:
        kind = record.kind
        parsed: dict[str, Any] | None = None
        body = flow.request.get_content(strict=False) or b""
        requested: str | None = None
        if kind != OTHER_API:
            parsed, body, problem = _parse_json_object(flow)
            if problem is None:
                problem = request_problem(kind, parsed)
            if problem:
                self._answer(flow, record, error_response(400, "invalid_request_error", problem))
                return
            requested = parsed["model"]
        stream = kind == MESSAGES and bool(parsed and parsed.get("stream") is True)
        record.requested_model, record.stream = requested, stream

        settings = self.providers.settings
        board = self.providers.board
        client_headers = [(k, v) for k, v in flow_hygiene.client_headers(flow).items(multi=True)]
        affinity_key = session_key(parsed, client_headers) if settings.affinity_in_force == "session" else None
        # Messages go to every provider type; other endpoints exist only at Anthropic-type providers.
        plan = self.router.plan(
            self.providers.config.providers, board, settings, types=MESSAGE_TYPES if kind == MESSAGES else ("anthropic",),
            preferred=self.affinity.provider_for(affinity_key),
        )
        penalize = kind == MESSAGES
        if kind == COUNT_TOKENS:
            if settings.count_tokens == "local" or (settings.count_tokens == "auto" and not plan.usable):
                await self._count_locally(flow, record, parsed)
                return
            # A count is quick or not worth waiting for; it never cools a provider down (penalize is off).
            settings = settings.model_copy(update={"request_timeout": settings.count_tokens_timeout})

        def on_committed_failure(provider: ProviderConfig, reason: str, failure_kind: str) -> None:
            if flow.error is not None or _client_gone(flow):
                return  # the stream broke because the client left and the balancer closed it: nobody's failure
            reason = self.providers.redact(reason)
            log.warning("%s failed after its stream was committed: %s", provider.name, loggable(reason))
            record.fail_after_commit(provider.name, reason, failure_kind)
            flow.comment = f"{flow.comment}, then failed: {reason}" if flow.comment else f"failed: {reason}"
            if penalize:
                record_failure(board, self.providers.settings, provider.name, reason, failure_kind)

        exchange = Exchange(
            kind=kind, method=flow.request.method, path=flow.request.path, client_headers=client_headers,
            body=body, parsed=parsed, requested_model=requested, stream=stream,
            idle_timeout=settings.stream_idle_timeout, on_committed_failure=on_committed_failure,
            redact=self.providers.redact,
        )
        calls: dict[str, ProviderCall] = {}  # per provider: the call its adapter prepared

        def build(provider: ProviderConfig) -> httpx.Request:
            call = calls[provider.name] = ADAPTERS[provider.type].prepare(provider, exchange)
            return call.request

        async def open_answer(provider: ProviderConfig, response: httpx.Response, deadline: float) -> Answer:
            return await calls[provider.name].open_answer(response, deadline)

        result = await attempt_in_turn(
            plan, build, self.pool, board, settings, open_answer, penalize,
            redact=self.providers.redact, client_gone=lambda: _client_gone(flow),
        )
        record.attempts = [
            {"provider": a.provider, "outcome": a.outcome, "ms": round(a.ms, 1), "failed": a.failed, "class": a.kind}
            for a in result.attempts
        ]
        if kind == COUNT_TOKENS and settings.count_tokens == "auto" and (
            isinstance(result, Exhausted) or result.response.status_code >= 400
        ):
            if isinstance(result, Success):
                await result.response.aclose()
            await self._count_locally(flow, record, parsed)
            return
        if isinstance(result, Exhausted):
            self._answer_exhausted(flow, record, result)
        else:
            choice = calls[result.provider.name].choice
            if choice is not None and not choice.tier_known and choice.model != requested:
                log.warning("model '%s' matches no tier (opus/sonnet/haiku); %s's big_model %r was used",
                            loggable(requested), result.provider.name, choice.model)
            if penalize:
                self.affinity.remember(affinity_key, result.provider.name)
            await self._relay(flow, record, result, choice)

    async def _count_locally(self, flow: http.HTTPFlow, record: FlowRecord, parsed: dict[str, Any] | None) -> None:
        # In a thread: a large request takes milliseconds to encode, and streams must not wait for it.
        tokens = await asyncio.to_thread(count_input_tokens, parsed or {})
        record.provider = "local"
        self._answer(flow, record, http.Response.make(
            200, json.dumps({"input_tokens": tokens}).encode(),
            {"content-type": "application/json", PROVIDER_HEADER: "local"},
        ))

    def _answer_exhausted(self, flow: http.HTTPFlow, record: FlowRecord, result: Exhausted) -> None:
        if result.client_gone:
            # Nobody will read it; it only keeps the flow from going on to mitmproxy's reverse target.
            self._answer(flow, record, error_response(503, "api_error", "the client left before an answer"))
            flow.comment = "the client left while providers were tried"
            return
        answer = exhaustion.answer_for(result, self.providers.board)
        self._answer(flow, record, error_response(
            answer.status, answer.error_type, result.summary(), **{"retry-after": str(answer.retry_after)}
        ))
        flow.comment = result.summary()

    async def _relay(self, flow: http.HTTPFlow, record: FlowRecord, result: Success, choice: ModelChoice | None) -> None:
        response = result.response
        if not flow.live or flow.error or _client_gone(flow):  # the client left while providers were tried
            await response.aclose()
            return
        record.provider = result.provider.name
        record.model = choice.model if choice else None
        answer = result.answer
        headers = [*answer.headers, (PROVIDER_HEADER, result.provider.name)]
        record.watch = UsageWatch(answer.is_sse)
        deferred = flow.metadata.get(DEFERRED)
        try:
            record.handoff = await self.relay.hand_off(
                answer.status, headers, watched(answer.body, record.watch), response.aclose,
                is_sse=answer.is_sse, streamed=record.stream, token=deferred,
            )
        except BaseException:
            await response.aclose()
            raise

        sent = result.request
        if log.isEnabledFor(logging.DEBUG):
            log.debug("req %s sent to %s %s: %s", record.request_id, sent.method, loggable(str(sent.url)),
                      loggable(sent.content[:DEBUG_PAYLOAD_LIMIT].decode("utf-8", errors="replace"), limit=None))
        record.sent = {
            "url": str(sent.url),
            "headers": [
                (k.decode("latin-1"), REDACTED.encode() if is_secret_header(k.decode("latin-1")) else v)
                for k, v in sent.headers.raw
            ],
            "body": sent.content,
        }
        flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", record.handoff.port
        flow.request.path = record.handoff.path
        flow.metadata[RELAYED] = True
        if not deferred:  # a deferred flow's request is on its way already: leave it as sent
            # The relay does not need the body again.
            flow.request.raw_content = b""
            flow.request.headers["content-length"] = "0"
            for name in ("content-encoding", "transfer-encoding"):
                flow.request.headers.pop(name, None)
        failed = [a for a in result.attempts if a.failed]
        flow.comment = f"served by {result.provider.name}" + (
            " after " + "; ".join(f"{a.provider}: {a.outcome}" for a in failed) if failed else ""
        )
