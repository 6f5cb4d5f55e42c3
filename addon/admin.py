"""Endpoints the balancer answers itself: `GET /` (health), `GET /providers`, `POST /providers/reload`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from mitmproxy import http

from .capabilities import Capabilities
from .config import ConfigError, ProviderConfig
from .health import HealthBoard
from .key_book import KeyBook
from .key_status import key_statuses
from .providers import Providers, describe
from .responses import error_response, json_response
from .route_config import Route
from .upstream import is_secret_header

log = logging.getLogger("balancer")


def public_url(url: str) -> str:
    """A URL without any user:password part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def provider_status(
    provider: ProviderConfig,
    board: HealthBoard,
    capabilities: Capabilities | None = None,
    keys: KeyBook | None = None,
) -> dict[str, Any]:
    """What `GET /providers` shows of one provider: never a credential (its keys by number and fingerprint).
    `learned`: per model, how requests to it are changed because it refused part of one."""
    health = board.get(provider.name)
    remaining = board.cooldown_remaining(provider.name)
    status: dict[str, Any] = {
        "name": provider.name,
        "type": provider.type,
        "base_url": public_url(provider.base_url),
        "auth_type": provider.auth_type,
        "big_model": provider.big_model,
        "small_model": provider.small_model,
        "enabled": provider.enabled,
        "healthy": provider.enabled and remaining <= 0,
        "cooldown_remaining": round(remaining, 1),
        "cooldown_reason": health.cooldown_reason if remaining > 0 else None,
        "probing": board.is_probing(provider.name),
        "priority": provider.priority,
        "weight": provider.weight,
        "requests": health.requests,
        "failures": health.failures,
        "failures_by_class": dict(health.failures_by_class),
        "consecutive_failures": health.consecutive_failures,
        "latency_ms": round(health.latency_ms, 1) if health.latency_ms is not None else None,
        "last_error": health.last_error,
        "last_error_at": health.last_error_at,
        "learned": capabilities.shown(provider) if capabilities is not None else {},
    }
    if keys is not None and provider.keys:
        status["keys"] = key_statuses(provider, board, keys)
    return status


class AdminApi:
    ROUTES: ClassVar[dict[str, tuple[str, str]]] = {
        "/": ("GET", "health"),
        "/providers": ("GET", "list"),
        "/providers/reload": ("POST", "reload"),
    }

    def __init__(self, providers: Providers, runtime_status: Callable[[], dict[str, Any]] | None = None):
        self.providers = providers
        # Extra top-level fields for GET /providers from the parts that move traffic (open streams, ...).
        self.runtime_status = runtime_status or dict

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        route = self.ROUTES.get(flow.request.path.split("?", 1)[0])
        if route is None:
            return
        method, action = route
        if flow.request.method == "HEAD" and method == "GET":
            pass
        elif flow.request.method != method:
            flow.response = error_response(
                405, "invalid_request_error", f"{flow.request.path} accepts {method} only", allow=method
            )
            return
        flow.response = getattr(self, action)()
        flow.metadata["balancer"] = {"admin": action}

    def health(self) -> http.Response:
        board, capabilities = self.providers.board, self.providers.capabilities
        statuses = [provider_status(p, board, capabilities) for p in self.providers.config.providers]
        usable = [s["name"] for s in statuses if s["healthy"]]
        payload: dict[str, Any] = {
            "status": "ok" if usable else "unavailable",
            "providers": len(statuses),
            "usable": usable,
            "config": self.providers.loaded.source,
        }
        shared = self.providers.shared_status()
        if shared is not None:
            payload["shared_state"] = shared
        return json_response(200 if usable else 503, payload)

    def list(self) -> http.Response:
        board, capabilities = self.providers.board, self.providers.capabilities
        settings = self.providers.settings
        return json_response(
            200,
            {
                "config": self.providers.loaded.source,
                "strategy": settings.strategy,
                "affinity": settings.affinity_in_force,
                **self.runtime_status(),
                **self._shared_state(),
                "providers": [provider_status(p, board, capabilities, self.providers.keys)
                              for p in self.providers.config.providers],
                # In the order they are tried; a request none takes goes to every provider.
                "routes": [shown_route(route) for route in self.providers.config.routes],
            },
        )

    def _shared_state(self) -> dict[str, Any]:
        shared = self.providers.shared_status()
        return {} if shared is None else {"shared_state": shared}

    def reload(self) -> http.Response:
        try:
            loaded = self.providers.reload()
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            message = f"{exc}\n(the running configuration is kept)"
            return error_response(400, "invalid_request_error", message)
        return json_response(
            200,
            {
                "reloaded": True,
                "summary": describe(loaded),
                "providers": [p.name for p in loaded.config.providers],
                "warnings": loaded.warnings,
            },
        )


def shown_route(route: Route) -> dict[str, Any]:
    """A route as the file gives it, but a glob on a credential header (`x-api-key: "sk-team-a-*"`) shown hidden."""
    shown = route.model_dump(exclude_defaults=True)
    header = shown.get("when", {}).get("header")
    if header:
        shown["when"]["header"] = {name: "(hidden)" if is_secret_header(name) else glob
                                   for name, glob in header.items()}
    return shown
