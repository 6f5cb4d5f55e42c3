"""Commands for mitmproxy's and mitmweb's command prompt: `balancer.status`, `balancer.reload` and
`balancer.explain`.

They show and do what `GET /providers`, `POST /providers/reload` and `POST /routes/explain` do, for someone
watching the traffic in mitmproxy or mitmweb rather than calling the balancer's own endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import command, exceptions, flow, http

from .admin import provider_status
from .config import ConfigError
from .key_status import key_line
from .providers import Providers, describe

log = logging.getLogger("balancer")


def provider_line(status: dict[str, Any]) -> str:
    """One provider of `balancer.status`, from what `GET /providers` shows of it (never a credential)."""
    if not status["enabled"]:
        state = "disabled"
    elif status["cooldown_remaining"] > 0:
        state = f"cooling down {status['cooldown_remaining']:.1f}s"
        if status["cooldown_reason"]:
            state += f" ({status['cooldown_reason']})"
    else:
        state = "healthy"
        if status["probing"]:
            state += ", being probed"
    line = f"{status['name']}: {state} | requests {status['requests']}, failures {status['failures']}"
    learned = status.get("learned") or {}
    if learned:
        line += " | learned: " + "; ".join(f"{model or '-'} {', '.join(fixes)}" for model, fixes in learned.items())
    return line


class BalancerCommands:
    def __init__(
        self, providers: Providers, runtime_status: Callable[[], dict[str, Any]] | None = None,
        explain: Callable[[http.HTTPFlow], str] | None = None,
    ):
        self.providers = providers
        # Extra fields for the first line of `balancer.status` (open streams, sessions, ...).
        self.runtime_status = runtime_status or dict
        self._explain = explain  # route_explain.RouteExplain.explain_flow

    @command.command("balancer.status")
    def status(self) -> str:
        """Config source, strategy, and each provider: healthy or cooling down (why), requests, failures."""
        settings = self.providers.settings
        head = [
            f"config: {self.providers.loaded.source}",
            f"strategy: {settings.strategy}",
            f"affinity: {settings.affinity_in_force}",
            *(f"{key.replace('_', ' ')}: {value}" for key, value in self.runtime_status().items()),
        ]
        lines = [" | ".join(head)]
        if self.providers.startup_error:
            lines.append(f"no usable configuration (fix the file, then reload): {self.providers.startup_error}")
        board = self.providers.board
        capabilities = self.providers.capabilities
        for provider in self.providers.config.providers:
            status = provider_status(provider, board, capabilities, self.providers.keys)
            lines.append(provider_line(status))
            if provider.is_pool or any(k["headroom"] or k["passed_over"] for k in status.get("keys", ())):
                lines += [key_line(key) for key in status["keys"]]
        return "\n".join(lines)

    @command.command("balancer.reload")
    def reload(self) -> str:
        """Re-read the providers file like POST /providers/reload (a bad file is refused, the old one kept)."""
        try:
            loaded = self.providers.reload()
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            raise exceptions.CommandError(f"{exc}\n(the running configuration is kept)") from None
        summary = describe(loaded)
        if loaded.warnings:
            count = len(loaded.warnings)
            summary += f"; {count} warning{'s' if count > 1 else ''}: " + "; ".join(loaded.warnings)
        return summary

    @command.command("balancer.explain")
    def explain(self, flows: Sequence[flow.Flow]) -> str:
        """Which route the selected flow's request takes now, which conditions held, the providers it would try in
        order and why others are left out (`balancer.explain @focus`); nothing is sent. Also written to the log."""
        if self._explain is None:
            raise exceptions.CommandError("balancer.explain is not available")
        texts = []
        for each in flows:
            if not isinstance(each, http.HTTPFlow) or each.request.path.split("?", 1)[0] != "/v1/messages":
                texts.append(f"flow {each.id[:8]}: not a POST /v1/messages request")
                continue
            texts.append(f"flow {each.id[:8]}:\n{self._explain(each)}")
        text = "\n".join(texts) or "no flow selected"
        log.info("%s", text)
        return text
