"""`GET /metrics`: Prometheus text exposition of the balancer's traffic and of the providers' health.

Traffic is counted from the summary the gateway hands its `on_finished` listeners when an API flow is over
(flow_record.RequestSummary), whatever the order of the addons. Provider health is read from the health board at
scrape time, so it is never stale and providers removed by a reload disappear from the output.

Labels carry only bounded, non-secret values: kind, provider name, key number (`#1`), HTTP status, failure class,
direction, stream, reason. Never a credential, a model name or an error message.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from mitmproxy import http
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import health
from .attempt_marker import is_attempt_flow
from .flow_record import RequestSummary
from .http1_transport import DECLINED, TAKEN, UNUSED
from .key_identity import key_label
from .providers import Providers
from .responses import asks_to_read

PATH = "/metrics"
KINDS = ("messages", "count_tokens", "api")
FAILURE_CLASSES = frozenset({
    health.TRANSPORT, health.TIMEOUT, health.RATE_LIMITED, health.OVERLOADED, health.SERVER_ERROR, health.AUTH,
    health.STREAM_ERROR,
})
EARLY_OUTCOMES = (TAKEN, DECLINED, UNUSED)
NO_PROVIDER = "none"
OTHER = "other"
# The status label of a request whose client left before its answer ended (no provider is to blame for it).
CLIENT_GONE_STATUS = "client_gone"

# Whole requests to LLM providers run from milliseconds (count_tokens, errors) to minutes (long streams).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
TTFB_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


def _label(value: Any, allowed: frozenset[str] | tuple[str, ...] | None = None, default: str = OTHER) -> str:
    """A label value: only plain strings (of the allowed ones, when given)."""
    if not isinstance(value, str) or not value:
        return default
    if allowed is not None and value not in allowed:
        return OTHER
    return value


def _seconds(ms: Any) -> float | None:
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
        return None
    return ms / 1000.0


def _tokens(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class ProviderHealthCollector(Collector):
    """Gauges of every configured provider, read from the Providers addon at each scrape."""

    def __init__(self, providers: Providers):
        self.providers = providers

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "balancer_provider_healthy",
            "1 when the provider is enabled and not cooling down, else 0.",
            labels=["provider"],
        )
        enabled = GaugeMetricFamily(
            "balancer_provider_enabled", "1 when the provider is enabled in the providers file.", labels=["provider"]
        )
        cooldown = GaugeMetricFamily(
            "balancer_provider_cooldown_remaining_seconds",
            "Seconds until the provider's cooldown ends (0 when it is not cooling down).",
            labels=["provider"],
        )
        consecutive = GaugeMetricFamily(
            "balancer_provider_consecutive_failures",
            "Failures of the provider since its last success.",
            labels=["provider"],
        )
        board = self.providers.board
        for provider in self.providers.config.providers:
            remaining = board.cooldown_remaining(provider.name)
            healthy.add_metric([provider.name], 1.0 if provider.enabled and remaining <= 0 else 0.0)
            enabled.add_metric([provider.name], 1.0 if provider.enabled else 0.0)
            cooldown.add_metric([provider.name], remaining)
            consecutive.add_metric([provider.name], float(board.get(provider.name).consecutive_failures))
        yield from (healthy, enabled, cooldown, consecutive)
        yield from self._keys()
        shared = self.providers.shared_status()
        if shared is not None:
            yield GaugeMetricFamily(
                "balancer_shared_state_connected",
                "1 while the shared state server (settings.shared_state) is reachable, else 0 (this instance then "
                "serves on its own state).",
                value=1.0 if shared["connected"] else 0.0,
            )


    def _keys(self) -> Iterator[Metric]:
        book = self.providers.keys
        headroom = GaugeMetricFamily(
            "balancer_key_headroom_ratio",
            "Share left of the key's tightest rate limit, from the rate-limit headers of its latest answer.",
            labels=["provider", "key"],
        )
        open_now = GaugeMetricFamily(
            "balancer_key_open_requests", "Requests open now at the key (streams until they end), in this instance.",
            labels=["provider", "key"],
        )
        skipped = CounterMetricFamily(
            "balancer_key_skipped",
            "Requests for which a key was passed over while another key or provider could serve, by reason: "
            "headroom, utilization, rejected (rate-limit headers), rpm, tpm, max_concurrent (configured limits), "
            "cooling.",
            labels=["provider", "key", "reason"],
        )
        for provider in self.providers.config.providers:
            for index in range(len(provider.keys)):
                subject, label = provider.key_subjects[index], key_label(index)
                reading = book.readings.get(subject)
                tightest = reading.tightest if reading is not None else None
                if tightest is not None and tightest.share is not None:
                    headroom.add_metric([provider.name, label], tightest.share)
                open_now.add_metric([provider.name, label], float(book.usage.open_here(subject)))
        for (provider_name, label, reason), count in sorted(book.skipped.items()):
            skipped.add_metric([provider_name, label, reason], float(count))
        yield from (headroom, open_now, skipped)


class Metrics:
    def __init__(self, providers: Providers):
        self.providers = providers
        # A registry of our own: a script reload or a test builds a fresh one instead of colliding with the last.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "balancer_requests",
            "API requests by kind, the provider that served them ('none' if none did) and the HTTP status the "
            "client got ('client_gone' when the client left before the end, 'error' when the flow failed "
            "otherwise).",
            ["kind", "provider", "status"],
            registry=self.registry,
        )
        self.attempt_failures = Counter(
            "balancer_attempt_failures",
            "Provider attempts that failed, by provider and failure class.",
            ["provider", "class"],
            registry=self.registry,
        )
        self.failovers = Counter(
            "balancer_failovers",
            "API requests that needed more than one provider attempt (attempts started as hedges not counted).",
            registry=self.registry,
        )
        self.hedges = Counter(
            "balancer_hedges",
            "Provider attempts started as hedges (hedge_after): beside another provider's attempt that had not "
            "produced content yet, by the provider asked.",
            ["provider"],
            registry=self.registry,
        )
        self.hedge_wins = Counter(
            "balancer_hedge_wins",
            "Requests served by an attempt started as a hedge, by the provider that served.",
            ["provider"],
            registry=self.registry,
        )
        self.early_uploads = Counter(
            "balancer_early_uploads",
            "Large requests written to a provider before the balancer had read their body (all but the last byte), "
            "by provider and outcome: taken (the request sent was that one), declined (another was sent), unused "
            "(none was sent to that provider).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "balancer_request_duration_seconds",
            "Time from the request to the end of the answer to the client.",
            ["kind", "provider"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttfb = Histogram(
            "balancer_time_to_first_byte_seconds",
            "Time from the request to the first byte of the answer to the client.",
            ["provider", "stream"],
            buckets=TTFB_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "balancer_tokens",
            "Tokens of the answers' usage, by provider; direction 'in' (input) or 'out' (output); a stream that ended "
            "without its final usage counts the output it relayed, estimated.",
            ["provider", "direction"],
            registry=self.registry,
        )
        self.registry.register(ProviderHealthCollector(providers))

    # -- the endpoint ----------------------------------------------------------------------------------------
    def request(self, flow: http.HTTPFlow) -> None:
        self._serve(flow)

    def _serve(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response:
            return
        if asks_to_read(flow, PATH):
            flow.response = http.Response.make(
                200, self.exposition(), {"content-type": CONTENT_TYPE_LATEST, "x-balancer-provider": "none"}
            )
        if flow.response:
            flow.metadata["balancer"] = {"admin": "metrics"}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- counting --------------------------------------------------------------------------------------------
    def count(self, request: RequestSummary) -> None:
        """Count one finished API request (a listener of the gateway's `on_finished`)."""
        kind = _label(request.kind, KINDS)
        provider = _label(request.provider, default=NO_PROVIDER)
        if request.client_left:
            status_label = CLIENT_GONE_STATUS
        else:
            status_label = str(request.http_status) if request.http_status is not None else "error"
        self.requests.labels(kind, provider, status_label).inc()

        for attempt in request.attempts:
            if attempt.failed:
                self.attempt_failures.labels(
                    _label(attempt.provider, default=NO_PROVIDER), _label(attempt.failure_class, FAILURE_CLASSES)
                ).inc()
        if sum(1 for attempt in request.attempts if not attempt.hedge) > 1:
            self.failovers.inc()
        for attempt in request.attempts:
            if attempt.hedge:
                self.hedges.labels(_label(attempt.provider, default=NO_PROVIDER)).inc()
        serving = request.attempts[-1] if request.attempts and request.provider else None
        if serving is not None and serving.hedge and serving.provider == request.provider:
            self.hedge_wins.labels(provider).inc()

        if request.early_upload is not None:
            written_to, outcome = request.early_upload
            self.early_uploads.labels(_label(written_to, default=NO_PROVIDER), _label(outcome, EARLY_OUTCOMES)).inc()

        total = _seconds(request.total_ms)
        if total is not None:
            self.duration.labels(kind, provider).observe(total)
        ttfb = _seconds(request.ttfb_ms)
        if ttfb is not None:
            self.ttfb.labels(provider, "true" if request.stream is True else "false").observe(ttfb)

        # Token counts are what a provider reported: only plain, positive integers are counted.
        if request.usage:
            for key, direction in (("input_tokens", "in"), ("output_tokens", "out")):
                count = _tokens(request.usage.get(key))
                if count:
                    self.tokens.labels(provider, direction).inc(count)
