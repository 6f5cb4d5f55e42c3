"""A request changed the way a provider needs it (the fixes of capabilities.py): pure functions on its body and
headers, used by the adapters when they build a request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .capabilities import DROP, DROP_BETA, FOLD_SYSTEM, RENAME, STRIP_THINKING, Fix

# What an assistant message that held nothing but thinking keeps (its content may not be empty).
THINKING_PLACEHOLDER = "(thinking)"


def openai_body_with(body: dict[str, Any], fixes: Iterable[Fix]) -> dict[str, Any]:
    """A Chat Completions body without the parameters dropped and with those renamed under their new name."""
    out = dict(body)
    for fix in fixes:
        if fix.kind == DROP:
            out.pop(fix.name, None)
        elif fix.kind == RENAME and fix.name in out:
            out[fix.to] = out.pop(fix.name)
    return out


def anthropic_body_with(body: dict[str, Any], fixes: Iterable[Fix]) -> dict[str, Any]:
    """A Messages body without the dropped fields, with system messages folded and earlier thinking stripped as
    the fixes say."""
    fixes = frozenset(fixes)
    dropped = {fix.name for fix in fixes if fix.kind == DROP}
    out = {key: value for key, value in body.items() if key not in dropped}
    kinds = {fix.kind for fix in fixes}
    if FOLD_SYSTEM in kinds and isinstance(out.get("messages"), list):
        out["messages"] = system_messages_folded(out["messages"])
    if STRIP_THINKING in kinds:
        out = without_earlier_thinking(out)
    return out


def headers_without_betas(headers: list[tuple[str, str]], fixes: Iterable[Fix]) -> list[tuple[str, str]]:
    """The `anthropic-beta` values dropped from the headers (a header left empty is left out)."""
    betas = {fix.name for fix in fixes if fix.kind == DROP_BETA}
    if not betas:
        return headers
    out = []
    for name, value in headers:
        if name.lower() == "anthropic-beta":
            kept = [v.strip() for v in value.split(",") if v.strip() and v.strip() not in betas]
            if not kept:
                continue
            value = ",".join(kept)
        out.append((name, value))
    return out


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content) if isinstance(content, list) else []


def system_messages_folded(messages: list[Any]) -> list[Any]:
    """Messages with role `system` turned into user text, joined with the user turns next to them (tool results
    first, as Anthropic requires of a user turn), for a provider that accepts only `user` and `assistant`."""
    out: list[Any] = []
    folded_last = False  # the last message in `out` holds a folded system message
    for message in messages:
        is_system = isinstance(message, dict) and message.get("role") == "system"
        if is_system:
            message = {"role": "user", "content": _blocks(message.get("content"))}
        previous = out[-1] if out else None
        joins = (
            isinstance(message, dict) and message.get("role") == "user" and isinstance(previous, dict)
            and previous.get("role") == "user" and (is_system or folded_last)
        )
        if joins:
            assert isinstance(previous, dict) and isinstance(message, dict)
            blocks = _blocks(previous.get("content")) + _blocks(message.get("content"))
            results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
            others = [b for b in blocks if not (isinstance(b, dict) and b.get("type") == "tool_result")]
            out[-1] = {**previous, "content": results + others}
        else:
            out.append(message)
        folded_last = is_system or (joins and folded_last)
    return out


def _is_thinking(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking")


def without_earlier_thinking(body: dict[str, Any]) -> dict[str, Any]:
    """The conversation without its assistant thinking blocks, for a provider that cannot verify their signatures.

    When the last assistant turn lost its thinking while a tool call is being answered, the request goes without
    thinking (and without the context edits that need it): with thinking on, Anthropic requires that turn to start
    with its thinking block."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    out: list[Any] = []
    last_assistant_stripped = False
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "assistant":
            content = message.get("content")
            stripped = isinstance(content, list) and any(_is_thinking(b) for b in content)
            if stripped:
                assert isinstance(content, list)
                kept = [b for b in content if not _is_thinking(b)]
                message = {**message, "content": kept or [{"type": "text", "text": THINKING_PLACEHOLDER}]}
            last_assistant_stripped = stripped
        out.append(message)
    result = {**body, "messages": out}
    if last_assistant_stripped and _answers_tool_call(out) and _thinking_on(body):
        result.pop("thinking", None)
        result = _without_thinking_edits(result)
    return result


def _answers_tool_call(messages: list[Any]) -> bool:
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), list):
        return False
    return any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"])


def _thinking_on(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _without_thinking_edits(body: dict[str, Any]) -> dict[str, Any]:
    management = body.get("context_management")
    if not isinstance(management, dict) or not isinstance(management.get("edits"), list):
        return body
    edits = [e for e in management["edits"]
             if not (isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking"))]
    if edits:
        return {**body, "context_management": {**management, "edits": edits}}
    return {key: value for key, value in body.items() if key != "context_management"}
