"""What a Messages request is, as routes and provider capabilities look at it (pure, no I/O).

Read once per request from its parsed body, the client's headers and the client key's name. The input token
estimate is the one thing that costs: the local counter (token_count.py) takes about 100 ms for a 1 MB body. It is
computed only when a route or provider asks for it (`min_input_tokens`, `max_context`), and not at all when a
bound read off the body's size already says it is below every threshold (`input_token_bound`, itself read only
when something looks at tokens: route_plan.py).

Subagents: Claude Code writes a billing line as the text of the first system block,
`x-anthropic-billing-header: cc_version=...; cc_entrypoint=cli;`, and adds `cc_is_subagent=true;` to it in a
subagent's requests (tests/fixtures/claude-code-subagent.request.json, captured from 2.1.197). Only that
field of that line counts: the same words anywhere else (a user's message, a later system block, a file read) do
not make a request a subagent's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .model_map import Tier, tier_of
from .server_tools import is_server_tool
from .token_count import IMAGE_MAX_TOKENS, PDF_MIN_TOKENS

BILLING_LINE = "x-anthropic-billing-header:"
SUBAGENT_FIELD = "cc_is_subagent"


@dataclass(frozen=True)
class RequestTraits:
    model: str
    tier: Tier
    thinking: bool
    server_tools: tuple[str, ...]  # the types of the server tools it carries
    images: bool | None  # None: not looked for, nothing in the configuration asks (see traits_of)
    subagent: bool
    headers: dict[str, str]  # lower-case name -> value (the first of repeated headers)
    client: str | None
    # The local estimate of its input tokens, when something needed it; None: not counted (see input_bound).
    input_tokens: int | None = None
    input_bound: int | None = None  # an upper bound of the estimate, read off the body's size

    def with_tokens(self, tokens: int) -> RequestTraits:
        return replace(self, input_tokens=tokens)

    def with_bound(self, bound: int) -> RequestTraits:
        return replace(self, input_bound=bound)

    def tokens_at_least(self, threshold: int) -> bool | None:
        """Whether the estimate is at least `threshold` (None: not known; it was neither counted nor bounded)."""
        if self.input_tokens is not None:
            return self.input_tokens >= threshold
        if self.input_bound is not None and self.input_bound < threshold:
            return False
        return None

    def tokens_text(self) -> str:
        if self.input_tokens is not None:
            return str(self.input_tokens)
        if self.input_bound is not None:
            return f"at most {self.input_bound}"
        return "not counted"


def thinking_on(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def server_tool_types(body: dict[str, Any]) -> tuple[str, ...]:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return ()
    return tuple(dict.fromkeys(str(tool["type"]) for tool in tools if is_server_tool(tool)))


def _has_image(content: Any, depth: int = 0) -> bool:
    if not isinstance(content, list) or depth > 4:
        return False
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "image":
            return True
        # Tool results (and server tools' results) carry content blocks of their own.
        if _has_image(block.get("content"), depth + 1):
            return True
    return False


def has_images(body: dict[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    return any(isinstance(m, dict) and _has_image(m.get("content")) for m in messages)


def first_system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list) and system and isinstance(system[0], dict):
        text = system[0].get("text")
        return text if isinstance(text, str) else ""
    return ""


def is_subagent(body: dict[str, Any]) -> bool:
    """Claude Code's billing line, first in the first system block, says `cc_is_subagent=true`."""
    text = first_system_text(body)
    if not text.startswith(BILLING_LINE):
        return False
    line = text[len(BILLING_LINE):].split("\n", 1)[0]
    for item in line.split(";"):
        name, _, value = item.partition("=")
        if name.strip() == SUBAGENT_FIELD:
            return value.strip().lower() == "true"
    return False


def input_token_bound(body: bytes) -> int:
    """An upper bound of token_count.count_input_tokens for this body: every token is at least one byte of the text
    it counts, which the body holds (JSON escapes only make it longer); tool inputs are counted re-encoded with a
    space after each `:` and `,`; images and documents count a fixed size whatever their bytes."""
    return (
        len(body) + body.count(b":") + body.count(b",")
        + IMAGE_MAX_TOKENS * body.count(b'"image"') + PDF_MIN_TOKENS * body.count(b'"document"')
    )


def traits_of(
    body: dict[str, Any], headers: Iterable[tuple[str, str]], client: str | None, images: bool = True
) -> RequestTraits:
    """Everything but the input tokens (route_plan.py adds what it needs of them). `images` False: the blocks are
    not walked for images (`RequestTraits.images` is None), for a configuration where nothing asks."""
    model = body.get("model")
    model = model if isinstance(model, str) else ""
    tier, _ = tier_of(model)
    seen: dict[str, str] = {}
    for name, value in headers:
        seen.setdefault(name.lower(), value)
    return RequestTraits(
        model=model, tier=tier, thinking=thinking_on(body), server_tools=server_tool_types(body),
        images=has_images(body) if images else None, subagent=is_subagent(body), headers=seen, client=client,
    )
