"""Errors from OpenAI-compatible servers -> Anthropic's error shape and status (pure, no I/O).

Understood bodies: OpenAI `{"error": {"message", "type", "code"}}`, vLLM `{"object": "error", "message", ...}`,
Ollama `{"error": "..."}`, FastAPI `{"detail": "..." | [{"msg": ...}]}`, a bare `{"message": ...}`, a JSON list
holding one of those, and anything else as plain text (HTML tags removed).

Status and type follow docs/design.md, "Translation rules", errors. A context-window overflow becomes a 400
`invalid_request_error` worded like Anthropic's, because Claude Code recognises exactly these texts:
- `prompt is too long: M tokens > N maximum` (starts auto-compaction) when the prompt alone is too long, and
  `prompt is too long: <provider message>` when the provider flags an overflow without both numbers;
- "input length and `max_tokens` exceed context limit: M + C > N, decrease input length or `max_tokens` and
  try again" when the provider says the prompt fits but prompt + completion does not (Claude Code then retries
  with a smaller `max_tokens` instead of compacting a conversation that is not too long); when the prompt fits and
  the completion size is not given, the provider's message is passed on unchanged (still a 400).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import bounded_message, error_body

_STATUS_AND_TYPE = {
    401: (401, "authentication_error"),
    402: (402, "billing_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    408: (504, "timeout_error"),
    413: (413, "request_too_large"),
    429: (429, "rate_limit_error"),
    500: (500, "api_error"),
    502: (502, "api_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
    529: (529, "overloaded_error"),
}

_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")
_NUMBER = r"(\d[\d,]*)"
_OVERFLOW_HINTS = re.compile(
    r"context[ _](length|window|size)|maximum context|prompt is too long|prompt too long|too many tokens"
    r"|context_length_exceeded|exceeds? the (model's )?(maximum|max) (context|input)",
    re.IGNORECASE,
)
_LIMIT_PATTERNS = [
    re.compile(r"maximum context length (?:is |of )?(?:about )?" + _NUMBER, re.IGNORECASE),
    re.compile(r"context (?:window|length|size|limit) (?:is |of )?\(?" + _NUMBER, re.IGNORECASE),
    re.compile(_NUMBER + r" (?:tokens? )?maximum", re.IGNORECASE),
    re.compile(r"(?:limit|maximum) (?:is |of )?" + _NUMBER + r" tokens", re.IGNORECASE),
]
_PROMPT_PATTERNS = [
    re.compile(r"resulted in " + _NUMBER + r" tokens", re.IGNORECASE),  # includes tools, unlike "in the messages"
    re.compile(_NUMBER + r" (?:tokens )?in the messages", re.IGNORECASE),
    re.compile(_NUMBER + r" (?:tokens )?of text input", re.IGNORECASE),
    re.compile(r"request has " + _NUMBER + r" (?:input )?tokens", re.IGNORECASE),
    re.compile(r"prompt (?:contains|has|is) " + _NUMBER + r" tokens", re.IGNORECASE),
    re.compile(r"request \(" + _NUMBER + r" tokens\)", re.IGNORECASE),
    re.compile(r"prompt is too long: " + _NUMBER + r" tokens", re.IGNORECASE),
    re.compile(r"(?:input|prompt) (?:length|tokens?)(?: of| is|:)? " + _NUMBER, re.IGNORECASE),
]
_COMPLETION_PATTERNS = [
    re.compile(_NUMBER + r" (?:tokens )?(?:in|for) the completion", re.IGNORECASE),
    re.compile(_NUMBER + r" (?:tokens )?in the output", re.IGNORECASE),
    re.compile(r"max_(?:completion_)?tokens'? is too large: " + _NUMBER, re.IGNORECASE),
]


def to_anthropic_error(status: int, body: bytes) -> tuple[int, bytes]:
    """(status for the client, Anthropic error body) for an error answer of an OpenAI-compatible server.

    A status below 400 (an error inside a 2xx body) takes the numeric `code` of the body when it is an HTTP status
    (OpenRouter does this), else 502."""
    message, kind, code = parse_error(body)
    status = _effective_status(status, code)
    overflow = _overflow_message(message, kind, code)
    if overflow is not None:
        return 400, error_body("invalid_request_error", bounded_message(overflow))
    if not message:
        message = f"the provider answered HTTP {status}"
    client_status, error_type = _status_and_type(status, message, kind, code)
    return client_status, error_body(error_type, bounded_message(message))


def parse_error(body: bytes) -> tuple[str, str, str]:
    """(message, type, code) from any of the understood error bodies; '' for what is missing."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, (bytes, bytearray)) else str(body or "")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return _plain_text(text), "", ""
    return error_fields(data) if isinstance(data, (dict, list)) else (_plain_text(text), "", "")


def error_fields(data: Any) -> tuple[str, str, str]:
    """(message, type, code) of an already-parsed error object (also used for in-stream error chunks)."""
    if isinstance(data, list):
        return error_fields(data[0]) if data else ("", "", "")
    if not isinstance(data, dict):
        return _as_text(data), "", ""
    error = data.get("error")
    if isinstance(error, dict):
        return (
            _as_text(error.get("message") or error.get("detail")),
            _as_text(error.get("type")),
            _as_text(error.get("code")),
        )
    if isinstance(error, str) and error:
        return error, "", _as_text(data.get("code"))
    if "detail" in data:
        return _detail_text(data["detail"]), "", ""
    return _as_text(data.get("message")), _as_text(data.get("type")), _as_text(data.get("code"))


def is_overloaded(message: str, kind: str, code: str) -> bool:
    return any("overload" in s.lower() for s in (message, kind, code)) or code in ("503", "529")


def _detail_text(detail: Any) -> str:
    """FastAPI's `detail`: a string, or a list of validation errors `{loc, msg, type}`."""
    if isinstance(detail, list):
        messages = []
        for item in detail:
            if isinstance(item, dict):
                loc = item.get("loc")
                location = ".".join(str(p) for p in loc) if isinstance(loc, (list, tuple)) else _as_text(loc or "")
                text = _as_text(item.get("msg"))
                messages.append(f"{location}: {text}" if location else text)
            else:
                messages.append(_as_text(item))
        return "; ".join(m for m in messages if m)
    return _as_text(detail)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def _plain_text(text: str) -> str:
    return _SPACES.sub(" ", _TAGS.sub(" ", text)).strip()


def _effective_status(status: int, code: str) -> int:
    if status >= 400:
        return status
    # isascii: str.isdigit also accepts digits int() refuses ("²")
    return int(code) if code.isascii() and code.isdigit() and len(code) == 3 and 400 <= int(code) <= 599 else 502


def _status_and_type(status: int, message: str, kind: str, code: str) -> tuple[int, str]:
    if (status == 429 or status >= 500) and is_overloaded(message, kind, code):
        return 529, "overloaded_error"
    if status >= 500 and "timeout" in f"{kind} {code}".lower():
        return 504, "timeout_error"
    if status in _STATUS_AND_TYPE:
        return _STATUS_AND_TYPE[status]
    if status >= 500:
        return 502, "api_error"
    return 400, "invalid_request_error"


# ---------------------------------------------------------------------------------------------------------------
# context overflow


def _overflow_message(message: str, kind: str, code: str) -> str | None:
    """Anthropic's wording for a context overflow, or None when the error is something else."""
    flagged = "context_length_exceeded" in (kind, code)
    if not flagged and not _OVERFLOW_HINTS.search(message):
        return None
    limit = _first_number(_LIMIT_PATTERNS, message)
    prompt = _first_number(_PROMPT_PATTERNS, message)
    if limit is not None and prompt is not None:
        if prompt >= limit:
            return f"prompt is too long: {prompt} tokens > {limit} maximum"
        completion = _first_number(_COMPLETION_PATTERNS, message)
        if completion is None:
            return message  # the prompt fits; only max_tokens is too large, and compaction would not help
        return (
            f"input length and `max_tokens` exceed context limit: {prompt} + {completion} > {limit}, "
            "decrease input length or `max_tokens` and try again"
        )
    if flagged or re.search(r"too long|too many|exceed|maximum context", message, re.IGNORECASE):
        return f"prompt is too long: {message}" if message else "prompt is too long"
    return None


def _first_number(patterns: list[re.Pattern[str]], text: str) -> int | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            digits = match.group(1).replace(",", "")
            if digits.isascii() and digits.isdigit() and len(digits) <= 12:  # a token count, not a 5000-digit number
                return int(digits)
    return None
