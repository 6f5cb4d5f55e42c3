"""Per-client series of `GET /metrics`, labelled with the client's name (never its key): requests, tokens by kind,
estimated spend, quota refusals, and how much of each quota is used (read at scrape time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .client_keys import ClientKey
from .prices import Charge
from .quotas import QuotaBook


class QuotaUseCollector(Collector):
    def __init__(self, clients: Callable[[], list[ClientKey]], book: QuotaBook):
        self.clients = clients
        self.book = book

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "balancer_client_quota_used_ratio",
            "Share of a client's quota used in the current window (1 and more: its requests are refused until the "
            "window ends), by client name and quota.",
            labels=["client", "quota"],
        )
        for client in self.clients():
            for use in self.book.standing(client):
                if use.share_used is not None:
                    gauge.add_metric([client.name, use.quota.name], use.share_used)
        yield gauge


class ClientMetrics:
    def __init__(self, registry: CollectorRegistry, clients: Callable[[], list[ClientKey]], book: QuotaBook):
        self.requests = Counter(
            "balancer_client_requests", "API requests by client name (requests refused for a quota included).",
            ["client"], registry=registry,
        )
        self.tokens = Counter(
            "balancer_client_tokens",
            "Tokens in the answers' usage by client name and kind: input, output, cache_write, cache_read.",
            ["client", "kind"], registry=registry,
        )
        self.spend = Counter(
            "balancer_client_spend_usd",
            "Estimated spend in USD by client name (usage priced by settings.prices and the built-in prices).",
            ["client"], registry=registry,
        )
        self.refusals = Counter(
            "balancer_client_quota_refusals", "Requests refused because their client was over a quota.",
            ["client", "quota"], registry=registry,
        )
        registry.register(QuotaUseCollector(clients, book))

    def request(self, client: str) -> None:
        self.requests.labels(client).inc()

    def charged(self, client: str, charge: Charge) -> None:
        for kind, count in charge.tokens.items():
            self.tokens.labels(client, kind).inc(count)
        if charge.spend:
            self.spend.labels(client).inc(charge.spend)

    def refused(self, client: str, quota: str) -> None:
        self.requests.labels(client).inc()
        self.refusals.labels(client, quota).inc()
