"""Client quotas at work: a client over a quota is refused (429 rate_limit_error with retry-after) before any
provider is tried; every finished request of a named client is charged its tokens and estimated spend.

Quotas apply to `POST /v1/messages`, what spends; counting tokens and listing models are never refused. Any
other API request (message batches, the legacy completions, files, ...) costs what its answer does not say: a
client with a token or spend quota is refused it (403), since it would spend without being metered; a client with
only a request quota gets it under that quota.
"""

from __future__ import annotations

import logging

from mitmproxy import http
from prometheus_client import CollectorRegistry

from .access import client_of
from .attempt_marker import is_attempt_flow
from .client_keys import ClientKey
from .client_metrics import ClientMetrics
from .flow_record import RequestSummary
from .log_text import loggable
from .prices import ceiling_price, charge
from .providers import Providers
from .quotas import QuotaBook
from .responses import error_response
from .usage_windows import UsageWindows

log = logging.getLogger("balancer")

# A quota whose window ends later than this: retrying will not help before then, so the SDKs (Claude Code's
# included) are told not to retry at once (x-should-retry: false); the retry-after still says when.
RETRY_HORIZON = 60
# Models without a price named in the log, each once; after that many, one line says further ones are not named
# (a client can name any number of made-up models).
UNPRICED_LOGGED = 20


# How a request counts under a client's quotas.
METERED, FREE, UNMETERED = "metered", "free", "unmetered"


def metering(method: str, path: str) -> str:
    """`metered`: a message, whose usage its answer reports; `free`: what costs nothing (counting tokens, listing
    models, the balancer's own endpoints); `unmetered`: any other API request, which may spend unseen (batches)."""
    route = path.split("?", 1)[0]
    if route == "/v1/messages" and method == "POST":
        return METERED
    if not route.startswith("/v1/") or route == "/v1/messages/count_tokens":
        return FREE
    if method in ("GET", "HEAD") and (route == "/v1/models" or route.startswith("/v1/models/")):
        return FREE
    return UNMETERED


class ClientUsage:
    def __init__(self, providers: Providers, usage: UsageWindows, registry: CollectorRegistry):
        self.providers = providers
        self.book = QuotaBook(usage)
        self.metrics = ClientMetrics(registry, self._clients, self.book)
        self._unpriced: set[str] = set()  # models already reported as having no price

    def _clients(self) -> list[ClientKey]:
        return list(self.providers.settings.client_keys)

    def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live:
            return
        kind = metering(flow.request.method, flow.request.path)
        if kind == FREE:
            return
        client = self.providers.settings.client_named(client_of(flow))
        if client is None or not client.has_quota:
            return
        if kind == UNMETERED and client.meters_spend:
            route = loggable(flow.request.path.split("?", 1)[0], 80)
            flow.response = error_response(
                403, "permission_error",
                f"client {client.name} has a token or spend quota, and the cost of {route} cannot be metered by "
                "the balancer: only /v1/messages, counting tokens and listing models are open to it",
            )
            flow.metadata["balancer"] = {"refused": "unmetered", "client": client.name}
            log.info("refused %s %s of client %s: its cost cannot be metered under its quotas",
                     flow.request.method, route, client.name)
            return
        refusal = self.book.admit(client)
        if refusal is None:
            return
        retry_after = refusal.use.retry_after
        headers = {"retry-after": str(retry_after)}
        if retry_after > RETRY_HORIZON:
            headers["x-should-retry"] = "false"
        flow.response = error_response(429, "rate_limit_error", refusal.message, **headers)
        flow.metadata["balancer"] = {"refused": "quota", "client": client.name, "quota": refusal.use.quota.name}
        log.info("refused a request of client %s: over its quota %s (retry after %d s)",
                 client.name, refusal.use.quota.name, retry_after)
        self.metrics.refused(client.name, refusal.use.quota.name)

    def count(self, summary: RequestSummary) -> None:
        """A finished API request (a listener of the gateway's `on_finished`)."""
        if summary.client is None:
            return
        self.metrics.request(summary.client)
        if not summary.usage:
            return
        settings = self.providers.settings
        client = settings.client_named(summary.client)
        # Fail closed: a client with a budget pays the highest price for a model without one.
        budgeted = client is not None and client.budget_per_month is not None
        spent = charge(summary.usage, summary.model, summary.requested_model, settings.prices,
                       ceiling_price(settings.prices) if budgeted else None)
        if spent.priced_as is None and spent.tokens:
            self._report_unpriced(summary.model or summary.requested_model or "?", summary.requested_model, budgeted)
        self.book.charge(summary.client, spent)
        self.metrics.charged(summary.client, spent)

    def _report_unpriced(self, model: str, requested: str | None, budgeted: bool) -> None:
        if model in self._unpriced or len(self._unpriced) > UNPRICED_LOGGED:
            return
        if len(self._unpriced) == UNPRICED_LOGGED:
            self._unpriced.add("")  # the summary is said once
            log.warning("more models without a price than the %d named above: further ones are not logged; add "
                        "prices for them to settings.prices", UNPRICED_LOGGED)
            return
        self._unpriced.add(model)
        log.warning("no price for model '%s' (nor for '%s'): its spend counts as 0 for clients without a "
                    "budget, and at the highest price of the table for clients with one; add it to "
                    "settings.prices", loggable(model), loggable(requested or "?"))
