"""`GET /usage` (an admin endpoint): each named client's use in the current windows, its quotas, the share used
and when each window ends. Names only, never a key."""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from .attempt_marker import is_attempt_flow
from .providers import Providers
from .quotas import QuotaBook
from .responses import error_response, json_response

PATH = "/usage"


class UsageApi:
    def __init__(self, providers: Providers, book: QuotaBook):
        self.providers = providers
        self.book = book

    def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live:
            return
        if flow.request.path.split("?", 1)[0] != PATH:
            return
        if flow.request.method not in ("GET", "HEAD"):
            flow.response = error_response(405, "invalid_request_error", f"{PATH} accepts GET only", allow="GET")
        else:
            flow.response = json_response(200, self.usage())
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
