"""Whether a provider's 2xx answer to `/v1/messages` is a complete Anthropic message (pure, no I/O).

A body that is not one — truncated or invalid JSON, an error object sent with HTTP 200, anything else — is a
provider failure that fails over, like an error status. The check is the least that clients rely on, so that
providers who add or omit optional fields still pass: a JSON object with `type: "message"`, `role: "assistant"`
and a `content` list of blocks that each name their `type`; a text block's `text` and a tool_use block's `id`,
`name` and `input` have their types; `usage`, when present, is an object and `stop_reason` a string or null.
Unknown fields and unknown block types pass, and the body is relayed as the provider wrote it.
"""

from __future__ import annotations

import json
from typing import Any

from .anthropic_events import error_of, failure_class_of
from .error_text import REASON_CHARS, public_message
from .errors import bounded_message
from .health import STREAM_ERROR

# The fields each known content block type needs, with their types.
_BLOCK_FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "text": (("text", str),),
    "tool_use": (("id", str), ("name", str), ("input", dict)),
}


def message_problem(body: bytes) -> tuple[str, str] | None:
    """None for a complete message; else (what is wrong, failure class)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return "the answer is not valid JSON (cut short or not JSON at all)", STREAM_ERROR
    if isinstance(message, dict) and message.get("type") == "error":
        kind, text = error_of(message)
        reason = f"error in a 200 answer: {kind or 'error'}" + (f": {public_message(text)}" if text else "")
        return bounded_message(reason, REASON_CHARS), failure_class_of(kind)
    problem = shape_problem(message)
    return (f"the answer is not a complete message: {problem}", STREAM_ERROR) if problem else None


def shape_problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return f"a JSON {type(message).__name__}, not an object"
    if message.get("type") != "message":
        return f"type is {_shown(message.get('type'))}, not 'message'"
    if message.get("role") != "assistant":
        return f"role is {_shown(message.get('role'))}, not 'assistant'"
    content = message.get("content")
    if not isinstance(content, list):
        return "content is not a list"
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"content[{index}] has no type"
        for name, kind in _BLOCK_FIELDS.get(block["type"], ()):
            if not isinstance(block.get(name), kind):
                return f"content[{index}] ({block['type']}) has no valid {name}"
    if "usage" in message and not isinstance(message["usage"], dict):
        return "usage is not an object"
    if message.get("stop_reason") is not None and not isinstance(message["stop_reason"], str):
        return "stop_reason is not a string"
    return None


def _shown(value: Any) -> str:
    return repr(value)[:40] if value is not None else "missing"
