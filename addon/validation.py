"""The basic shape of a Messages API request, checked before any provider sees it: a clear 400 for the client
instead of a provider's (or a translator's) confusion. Only what every request must have is checked, so that
fields Claude Code adds tomorrow still pass."""

from __future__ import annotations

from typing import Any

ROLES = ("user", "assistant", "system")


def request_problem(kind: str, body: dict[str, Any]) -> str | None:
    """What is wrong with a messages or count_tokens body, in words for the client; None when nothing is."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: a string naming the model is required"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "messages: a list of messages is required"
    if not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: must be an object with role and content"
        if message.get("role") not in ROLES:
            return f"messages.{i}.role: must be one of {', '.join(ROLES)}"
        if not isinstance(message.get("content"), (str, list)):
            return f"messages.{i}.content: must be a string or a list of content blocks"
    if kind == "messages":
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return "max_tokens: a positive integer is required"
        if "stream" in body and not isinstance(body["stream"], bool):
            return "stream: must be true or false"
    if "system" in body and not isinstance(body["system"], (str, list)):
        return "system: must be a string or a list of text blocks"
    if "tools" in body and not isinstance(body["tools"], list):
        return "tools: must be a list"
    return None
