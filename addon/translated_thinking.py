"""Thinking blocks the balancer wrote itself, from an OpenAI-type provider's reasoning.

Clients drop thinking without a signature, so these carry a synthetic one: `SIGNATURE_PREFIX` and a hash of the
thinking text. Anthropic rejects a signature it did not make, so before a conversation goes to an Anthropic-type
provider the blocks with that prefix are taken out. The OpenAI translation signs; the Anthropic adapter strips.
"""

from __future__ import annotations

import hashlib
from typing import Any

SIGNATURE_PREFIX = "openai-translated."
_PREFIX_BYTES = SIGNATURE_PREFIX.encode()


class ThinkingSignature:
    """The synthetic signature of a thinking text, computed incrementally so a stream never keeps the text."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, text: str) -> None:
        self._hash.update(text.encode("utf-8", errors="surrogatepass"))

    def value(self) -> str:
        return SIGNATURE_PREFIX + self._hash.hexdigest()[:32]


def thinking_signature(text: str) -> str:
    signature = ThinkingSignature()
    signature.update(text)
    return signature.value()


def may_hold_translated_thinking(body: bytes) -> bool:
    """A quick look at the raw body: False means it certainly has no block to strip."""
    return _PREFIX_BYTES in body


def without_translated_thinking(body: dict[str, Any]) -> dict[str, Any]:
    """The body without the thinking blocks the balancer signed (an empty message keeps a placeholder text)."""
    messages = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            kept = [
                block for block in content
                if not (isinstance(block, dict) and block.get("type") == "thinking"
                        and str(block.get("signature", "")).startswith(SIGNATURE_PREFIX))
            ]
            message = {**message, "content": kept or [{"type": "text", "text": "(thinking)"}]}
        messages.append(message)
    return {**body, "messages": messages}
