"""`GET /v1/models` (and `/v1/models/{id}`) in Anthropic's shape: the models clients can ask for here."""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from .attempt_marker import is_attempt_flow
from .config import BalancerConfig
from .providers import Providers
from .responses import error_response, json_response

# A date for entries whose real release date the balancer cannot know.
_CREATED = "2025-01-01T00:00:00Z"


def model_entries(config: BalancerConfig) -> list[dict[str, Any]]:
    """The Claude model names of `settings.models` (each routed by its tier), then every model a provider is
    configured to use, once each."""
    entries: dict[str, dict[str, Any]] = {}
    for model in config.settings.models:
        entries.setdefault(model, {"type": "model", "id": model, "display_name": model, "created_at": _CREATED})
    for provider in config.providers:
        if not provider.enabled:
            continue
        for tier, tier_model in (("big", provider.big_model), ("small", provider.small_model)):
            if tier_model and tier_model not in entries:
                entries[tier_model] = {
                    "type": "model",
                    "id": tier_model,
                    "display_name": f"{tier_model} ({provider.name}, {tier} tier)",
                    "created_at": _CREATED,
                }
    return list(entries.values())


def model_list(config: BalancerConfig) -> dict[str, Any]:
    data = model_entries(config)
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


class ModelsApi:
    def __init__(self, providers: Providers):
        self.providers = providers

    def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live or flow.request.method not in (
            "GET", "HEAD"
        ):
            return
        path = flow.request.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            payload: dict[str, Any] | None = model_list(self.providers.config)
        elif path.startswith("/v1/models/"):
            wanted = path.removeprefix("/v1/models/")
            payload = next((m for m in model_entries(self.providers.config) if m["id"] == wanted), None)
            if payload is None:
                flow.response = error_response(
                    404, "not_found_error", f"model: {wanted} is not offered by this balancer"
                )
                return
        else:
            return
        flow.response = json_response(200, payload)
