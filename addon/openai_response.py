"""OpenAI Chat Completions answer -> Anthropic Message (pure, no I/O); helpers shared with the stream translator.

Content order is thinking, text, tool_use (docs/design.md, "Translation rules", the answer). Reasoning never
goes into text. Thinking blocks carry a synthetic signature (translated_thinking.py): clients drop unsigned
thinking, and the recognisable prefix lets the proxy strip these blocks before a conversation is ever replayed to a real
Anthropic provider (which would reject the signature).

Tool arguments become the tool_use `input`:
- an object is used as is; `""`, whitespace or null become `{}`;
- a JSON string is parsed, twice when it is double-encoded (`"{\\"a\\": 1}"`);
- anything else -- invalid JSON, or JSON that is not an object (a list, a number) -- becomes the single fallback
  shape `{"_raw_arguments": "<the arguments exactly as received>"}` (`INVALID_ARGUMENTS_KEY`). The call then fails
  the tool's own input validation in the client, whose error the model sees and can correct, instead of the whole
  answer failing.

Whitespace-only text is dropped when the answer also calls tools (Anthropic rejects whitespace-only text blocks
when the client replays them); with no tool call it is kept so that the answer is not empty.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from .openai_request import ToolNames
from .translated_thinking import ThinkingSignature as ThinkingSignature  # openai_stream signs with it too
from .translated_thinking import thinking_signature

INVALID_ARGUMENTS_KEY = "_raw_arguments"
_UNSAFE_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

_STOP_REASONS = {
    "stop": "end_turn",
    "eos": "end_turn",
    "length": "max_tokens",
    "max_tokens": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class OpenAIResponseError(ValueError):
    """The provider answered 2xx but the body is not a completion (an in-body error, no choices)."""


# ---------------------------------------------------------------------------------------------------------------
# helpers shared with openai_stream


def message_id(raw: Any = None) -> str:
    """`msg_...`: derived from the provider's id when there is one (traceable in logs), else random."""
    if isinstance(raw, str) and raw:
        safe = _UNSAFE_ID_CHARS.sub("_", raw)
        return safe if safe.startswith("msg_") else f"msg_{safe}"
    return f"msg_{uuid.uuid4().hex}"


def tool_use_id(raw: Any) -> str:
    """A tool_use id Anthropic clients accept: `[a-zA-Z0-9_-]` only; `toolu_` + random when missing."""
    if isinstance(raw, str) and raw:
        return _UNSAFE_ID_CHARS.sub("_", raw)
    return f"toolu_{uuid.uuid4().hex[:24]}"


def parse_arguments(raw: Any) -> dict:
    """Tool-call arguments as the tool_use input object; see the module docstring for the fallback shape."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if not isinstance(raw, str):
        return {INVALID_ARGUMENTS_KEY: json.dumps(raw, ensure_ascii=False)}
    try:
        value = json.loads(raw)
        if isinstance(value, str):  # double-encoded
            value = json.loads(value) if value.strip() else {}
    except (ValueError, RecursionError):
        return {INVALID_ARGUMENTS_KEY: raw}
    return value if isinstance(value, dict) else {INVALID_ARGUMENTS_KEY: raw}


def reasoning_text(source: dict) -> str:
    """Reasoning from a message or a stream delta, whichever field the provider uses (never two of them:
    OpenRouter sends the same text as both `reasoning` and `reasoning_details`)."""
    for key in ("reasoning_content", "reasoning"):
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    details = source.get("reasoning_details")
    if not isinstance(details, list):
        return ""
    texts = []
    for detail in details:
        if isinstance(detail, dict):
            text = detail.get("text") if detail.get("type") != "reasoning.summary" else detail.get("summary")
            if isinstance(text, str):
                texts.append(text)
    return "".join(texts)


def content_text(content: Any) -> str:
    """`content` as text: a string, or the text of a list of parts (some servers answer with parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def stop_reason(finish_reason: Any, has_tool_calls: bool, matched_stop: Any = None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence). Tool calls win over any finish_reason: Ollama and some gpt-4o streams say
    `stop` after calling tools, and the client only runs tools on `tool_use`. vLLM names the matched stop string
    in `stop_reason`, which makes a real `stop_sequence` possible."""
    if has_tool_calls:
        return "tool_use", None
    if finish_reason in ("tool_calls", "function_call"):
        return "end_turn", None  # no call came through: a client waiting for tool_use blocks would find none
    if finish_reason == "stop" and isinstance(matched_stop, str) and matched_stop:
        return "stop_sequence", matched_stop
    if not isinstance(finish_reason, str):
        return "end_turn", None
    return _STOP_REASONS.get(finish_reason, "end_turn"), None


def anthropic_usage(usage: Any) -> dict[str, int]:
    """Anthropic usage: cached prompt tokens are reported apart, not inside `input_tokens` (sending OpenAI's total
    as input would double Claude Code's context meter once cache reads are added)."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = cached or _int(usage.get("prompt_cache_hit_tokens"))
    cached = min(cached, prompt) if prompt else cached
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def has_usage(usage: Any) -> bool:
    """Whether a chunk's usage says anything (some providers send zeros or null in every chunk)."""
    return isinstance(usage, dict) and any(_int(usage.get(k)) for k in ("prompt_tokens", "completion_tokens"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# ---------------------------------------------------------------------------------------------------------------
# the non-streamed answer


def to_anthropic_message(body: dict, requested_model: str, names: ToolNames) -> dict:
    """The Anthropic Message for a Chat Completions body; raises OpenAIResponseError when there is no completion."""
    choice = _first_choice(body)
    message = given if isinstance(given := choice.get("message"), dict) else {}
    calls = _tool_calls(message)
    content = _thinking_blocks(message) + _text_blocks(message, bool(calls))
    content += [_tool_use_block(call, names) for call in calls]
    reason, sequence = stop_reason(choice.get("finish_reason"), bool(calls), choice.get("stop_reason"))
    return {
        "id": message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(body.get("usage")),
    }


def _first_choice(body: Any) -> dict:
    if not isinstance(body, dict):
        raise OpenAIResponseError("the provider's answer is not a JSON object")
    if body.get("error"):
        error = body["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise OpenAIResponseError(str(message or "the provider answered with an error"))
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise OpenAIResponseError("the provider's answer has no choices")
    return choices[0]


def _thinking_blocks(message: dict) -> list[dict]:
    text = reasoning_text(message)
    return [{"type": "thinking", "thinking": text, "signature": thinking_signature(text)}] if text else []


def _text_blocks(message: dict, has_tool_calls: bool) -> list[dict]:
    text = content_text(message.get("content"))
    if not text and isinstance(message.get("refusal"), str):
        text = message["refusal"]
    if not text or (has_tool_calls and text.isspace()):
        return []
    return [{"type": "text", "text": text}]


def _tool_calls(message: dict) -> list[dict]:
    raw_calls = message.get("tool_calls")
    calls = [c for c in raw_calls if isinstance(c, dict)] if isinstance(raw_calls, list) else []
    legacy = message.get("function_call")
    if not calls and isinstance(legacy, dict):
        calls = [{"function": legacy}]
    return calls


def _tool_use_block(call: dict, names: ToolNames) -> dict:
    function = given if isinstance(given := call.get("function"), dict) else {}
    name = given_name if isinstance(given_name := function.get("name"), str) else ""
    return {
        "type": "tool_use",
        "id": tool_use_id(call.get("id")),
        "name": names.original(name),
        "input": parse_arguments(function.get("arguments")),
    }
