"""One line per request in the log, and the same as JSON lines in `settings.log_file`.

Neither ever holds a credential: the line is built from what the balancer decided (providers, attempts,
timings, token counts), never from headers. What clients and providers wrote in it (model names, paths, error
messages, stop reasons) is bounded and escaped (log_text.py): one request is one line, whatever they wrote."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .errors import bounded_message
from .log_text import LOG_FIELD_CHARS, json_safe, loggable

REQUEST_FIELD = "balancer_request"  # the LogRecord attribute that carries a request's fields


def summary_line(request: dict[str, Any]) -> str:
    """`req 1a2b3c4d messages claude-sonnet-4 -> b/model stream 200 | attempts: ... | ttfb 45ms total 1203ms |
    tokens in 12 out 340 | end_turn | client alice | route big skipped c (disabled)`"""
    attempts = ", ".join(
        f"{a['provider']}{a.get('key') or ''} {_field(a['outcome'])} {a['ms']:.0f}ms"
        for a in request.get("attempts") or []
    ) or "none"
    target = request.get("provider") or "no provider"
    if request.get("provider") and request.get("model"):
        target += f"/{_field(request['model'])}"
    parts = [
        f"req {request.get('request_id')} {request.get('kind')} "
        f"{_field(request.get('requested_model') or request.get('path'))}"
        f" -> {target}{' stream' if request.get('stream') else ''} {request.get('status')}",
        f"attempts: {attempts}",
    ]
    timing = []
    if request.get("ttfb_ms") is not None:
        timing.append(f"ttfb {request['ttfb_ms']:.0f}ms")
    if request.get("total_ms") is not None:
        timing.append(f"total {request['total_ms']:.0f}ms")
    if timing:
        parts.append(" ".join(timing))
    usage = request.get("usage") or {}
    if usage:
        about = "~" if request.get("usage_estimated") else ""  # estimated from the content relayed
        parts.append(f"tokens in {usage.get('input_tokens', '?')} out {about}{usage.get('output_tokens', '?')}")
    if request.get("stop_reason"):
        parts.append(_field(request["stop_reason"]))
    hedges = dict.fromkeys(str(a["provider"]) for a in request.get("attempts") or [] if a.get("hedge"))
    if hedges:  # asked beside a provider that had not produced content yet
        parts.append("hedged to " + _field(", ".join(hedges)))
    if request.get("dropped_tools"):
        parts.append("dropped tools: " + _field(", ".join(request["dropped_tools"])))
    if request.get("client"):
        parts.append(f"client {_field(request['client'])}")
    if request.get("route") or request.get("skipped"):
        parts.append(_route(request))
    return loggable(" | ".join(parts), limit=None)


def _route(request: dict[str, Any]) -> str:
    """`route background (fell back: ...) skipped o1 (cannot run server tools ...), o2 (disabled)`"""
    text = f"route {_field(request['route'])}" if request.get("route") else ""
    if request.get("fell_back"):
        text += f" (fell back: {_field(request['fell_back'])})"
    skipped = request.get("skipped") or []
    if skipped:
        text += " skipped " + ", ".join(f"{s['provider']} ({_field(s['reason'])})" for s in skipped)
    return text.strip()


def _field(value: Any) -> str:
    """Client or provider text within the line, bounded (the whole line is escaped once it is built)."""
    return bounded_message(value if isinstance(value, str) else str(value), LOG_FIELD_CHARS)


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = getattr(record, REQUEST_FIELD, None)
        if isinstance(request, dict):
            entry["request"] = request
        return json_safe(json.dumps(entry, ensure_ascii=False, default=str))


class LogFile:
    """Keeps at most one JSON-lines file handler on the `balancer` logger, following `settings.log_file`."""

    def __init__(self) -> None:
        self.path: str | None = None
        self._handler: logging.Handler | None = None

    def use(self, path: str | None) -> None:
        if path == self.path:
            return
        self.close()
        if path:
            handler = logging.FileHandler(path, encoding="utf-8")
            handler.setFormatter(JsonLinesFormatter())
            logging.getLogger("balancer").addHandler(handler)
            self._handler = handler
        self.path = path

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger("balancer").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        self.path = None
