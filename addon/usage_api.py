"""`GET /usage` (an admin endpoint): each named client's use in the current windows, its quotas, the share used
and when each window ends. Names only, never a key."""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from .attempt_marker import is_attempt_flow
from .providers import Providers
from .quotas import QuotaBook
from .responses import asks_to_read, json_response

PATH = "/usage"


class UsageApi:
    def __init__(self, providers: Providers, book: QuotaBook):
        self.providers = providers
        self.book = book

    def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response:
            return
        if asks_to_read(flow, PATH):
            flow.response = json_response(200, self.usage())
        if flow.response:
            flow.metadata["balancer"] = {"admin": "usage"}

    def usage(self) -> dict[str, Any]:
        clients = []
        for client in self.providers.settings.client_keys:
            uses = self.book.standing(client)
            clients.append({
                "name": client.name,
                "over_quota": [use.quota.name for use in uses if use.exhausted],
                "quotas": [use.as_status() for use in uses],
            })
        return {"clients": clients}
