"""What a provider's 4xx says it does not accept, as fixes to the request (pure, no I/O).

Conservative by design: a fix is returned only when the error names, in a wording known for "not accepted", a part
of the request that was sent and that the request can do without. Anything else (an unknown wording, a name that
was not sent, a genuine client error such as a prompt too long or a bad tool schema) gives no fix, and the error
goes to the client as it is.

Wordings understood, in the error's JSON (any string of it, JSON inside a string opened too, as OpenRouter nests
the upstream error in `metadata.raw`) or its text:
- LiteLLM: `UnsupportedParamsError: openai does not support parameters: ['reasoning_effort'], for model=...`;
- OpenAI: `Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens'
  instead.` (and its `param` / `code: unsupported_parameter`), `Unrecognized request argument supplied: x`;
- pydantic (vLLM, Mistral, FastAPI servers, Anthropic and its relays): `extra_forbidden` with a `loc` naming the
  field, `x: Extra inputs are not permitted`, `x.type: Input tag 'adaptive' ... does not match any of the expected
  tags`, `x.type: Input should be 'enabled' or 'disabled'`;
- `'x' is not supported`, `x is not supported` (names with an underscore), `unknown field \\`x\\`` (Rust, Go),
  `Unknown name "x": Cannot find field` (Google), `extraneous key [x] is not permitted` (Bedrock),
  `unexpected keyword argument 'x'`;
- Anthropic's `Unexpected value(s) \\`a\\`, \\`b\\` for the \\`anthropic-beta\\` header`, and other texts that reject
  a beta flag the request sent by its name;
- a `system` message role refused (`Unexpected role "system"`, `messages.3.role: Input should be 'user' or
  'assistant'`, `unknown variant \\`system\\``);
- an invalid thinking signature (`messages.1.content.0: Invalid \\`signature\\` in \\`thinking\\` block`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .capabilities import DROP, DROP_BETA, FOLD_SYSTEM, RENAME, STRIP_THINKING, Fix

# An error body longer than this is read in a thread (a 16 KiB one takes tens of ms; other streams go on).
INLINE_BODY = 2048
# Statuses whose errors are read for a fix: what servers answer for a request they refuse (FastAPI says 422).
FIXABLE_STATUSES = frozenset({400, 422})
# The most of an error body looked at (the names are in an error's first lines; a longer body is a traceback).
TEXT_LIMIT = 16 * 1024
PARSE_LIMIT = 256 * 1024  # of a JSON error body, parsed to find its texts
_MAX_NODES = 2000
_MAX_DEPTH = 12

# OpenAI parameters the balancer writes that a request can do without.
OPENAI_DROPPABLE = frozenset({
    "reasoning_effort", "reasoning", "thinking", "stream_options", "parallel_tool_calls", "user", "metadata",
    "tool_choice", "temperature", "top_p",
})
# Whichever way the balancer asked for reasoning, a server that refuses any of these refuses what was sent.
REASONING_PARAMS = frozenset({"reasoning_effort", "reasoning", "thinking"})
# Parameters that may be sent under another name, when the server names the other one.
OPENAI_RENAMES = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}
# Anthropic body fields an answer cannot do without: never dropped. Every other top-level field may be, when a
# provider refuses it by name (Claude Code adds new ones: a relay that does not know them still serves).
ANTHROPIC_ESSENTIAL = frozenset({
    "model", "messages", "max_tokens", "system", "tools", "tool_choice", "stream", "stop_sequences",
})

_QUOTE = "[`'\"]"
_WORD = r"([A-Za-z_][A-Za-z0-9_]*)"
_REFUSED = r"(?:not supported|unsupported|not allowed|not permitted|not recogni[sz]ed|not available)"
_NAME_PATTERNS = [
    # `'reasoning_effort' is not supported`, `"tool_choice" = "required" is not supported`
    re.compile(_QUOTE + _WORD + _QUOTE + r"\s*(?:=\s*\S{1,40}\s+)?(?:(?:parameter|param|field|argument|property|key)"
               r"\s+)?(?:is\s+|are\s+)?" + _REFUSED),
    # `reasoning_effort is not supported with this model` (unquoted: only names with an underscore)
    re.compile(r"(?<![\w.])([A-Za-z]+_[A-Za-z0-9_]+)\s*(?:=\s*\S{1,40}\s+)?(?:(?:parameter|param|field)\s+)?"
               r"(?:is|are)\s+" + _REFUSED),
    # `parameter user is not supported`, `user parameter is not supported`
    re.compile(r"(?:parameter|param|field|argument|property)\s+" + _WORD + r"\s+(?:is|are)\s+" + _REFUSED),
    re.compile(r"(?<![\w.])" + _WORD + r"\s+(?:parameter|param|field|argument)\s+(?:is|are)\s+" + _REFUSED),
    # `Unsupported parameter: 'max_tokens'`, `unknown field \`x\``, `Unknown name "x"`, `extraneous key [x]`
    re.compile(r"(?:unsupported|unknown|unexpected|unrecogni[sz]ed|extraneous)\s+(?:request\s+)?"
               r"(?:parameter|argument|field|property|key|name|param|value)s?\s*:?\s*\[?\s*" + _QUOTE + "?" + _WORD),
    # `deepseek-reasoner does not support the parameter \`parallel_tool_calls\``
    re.compile(r"does not support (?:the )?(?:param(?:eter)?|field|argument|property)s?\s*:?\s*" + _QUOTE + _WORD +
               _QUOTE),
    # Python servers: `create() got an unexpected keyword argument 'reasoning_effort'`
    re.compile(r"unexpected keyword argument\s+" + _QUOTE + _WORD + _QUOTE),
]
# `Unrecognized request arguments supplied: a, b` (Azure, older OpenAI)
_UNRECOGNIZED_LIST = re.compile(r"unrecognized request arguments? supplied\s*:\s*([\w ,]+)")
# LiteLLM: `does not support parameters: ['a', 'b']` or a dict of them (older versions)
_LITELLM_LIST = re.compile(r"does not support (?:the )?(?:following )?param(?:eter)?s?\s*:?\s*(\[[^\]]{0,1000}\]|"
                           r"\{[^}]{0,1000}\})")
_QUOTED_WORD = re.compile(_QUOTE + _WORD + _QUOTE)
_DICT_KEY = re.compile(_QUOTE + _WORD + _QUOTE + r"\s*:")
# pydantic: `context_management: Extra inputs are not permitted`, `thinking.type: Input tag 'adaptive' found
# using 'type' does not match any of the expected tags: ...`, `thinking.type: Input should be 'enabled' or ...`
# (a value of a kind the server does not know). The path's first part is the top-level field.
_PYDANTIC_PATH = re.compile(
    r"(?:^|[\s,;\"'(\[{])" + _WORD + r"(?:\.[\w-]+)*\s*:\s*(?:extra (?:inputs|fields) (?:are )?not permitted|"
    r"input tag .{0,120}? does not match any of the expected tags|input should be '[^']{0,80}'"
    r"(?:, '[^']{0,80}')* or '[^']{0,80}')",
    re.MULTILINE,
)
# pydantic's error list as Python's repr inside a message (vLLM): `'loc': ('body', 'reasoning_effort')`
_EXTRA_FORBIDDEN = re.compile(r"extra_forbidden|extra (?:inputs|fields) (?:are )?not permitted")
_REPR_LOC = re.compile(r"['\"]loc['\"]\s*:\s*[\(\[]\s*(?:['\"]body['\"]\s*,\s*)?['\"]" + _WORD +
                       r"['\"]\s*,?\s*[\)\]]")
_UNSUPPORTED_CODES = frozenset({"unsupported_parameter", "unsupported_value", "unknown_parameter",
                                "unrecognized_parameter"})

_BETA_REFUSED = re.compile(r"unexpected|invalid|unsupported|not supported|unknown|not allowed|not permitted|"
                           r"not recogni[sz]ed|not enabled|not available")
_SYSTEM_REFUSED = [
    re.compile(r"unexpected role\W{0,3}system"),
    re.compile(r"(?:invalid|unknown|unsupported|unexpected)\s+(?:message\s+)?role\W{0,3}(?:\w+\W{1,3})?system"),
    re.compile(r"role\W{0,3}system\W{0,3}(?:is\s+)?" + _REFUSED),
    re.compile(r"messages\.\d+\.role\s*:\s*input should be"),
    re.compile(r"unknown variant\s*" + _QUOTE + r"system" + _QUOTE),
    re.compile(r"system\W{0,3}(?:is\s+)?" + _REFUSED + r"\s+as\s+(?:an?\s+)?(?:message\s+|input\s+)?role"),
]
_SIGNATURE = re.compile(r"signature")
_THINKING = re.compile(r"thinking")
_SIGNATURE_REFUSED = re.compile(r"invalid|verif|mismatch|expired|corrupt|does not match|malformed|not valid")


@dataclass(frozen=True)
class SentRequest:
    """What was sent, as far as the recognisers need it."""

    keys: frozenset[str]  # the body's top-level fields
    betas: tuple[str, ...] = ()  # `anthropic-beta` values
    system_messages: bool = False  # a message with role `system` among the messages
    signed_thinking: bool = False  # an assistant message with a thinking or redacted_thinking block


def sent_openai(body: Mapping[str, Any]) -> SentRequest:
    return SentRequest(frozenset(body))


def sent_anthropic(body: Mapping[str, Any] | None, headers: Iterable[tuple[str, str]]) -> SentRequest:
    betas = tuple(
        value.strip() for name, header in headers if name.lower() == "anthropic-beta"
        for value in header.split(",") if value.strip()
    )
    if body is None:
        return SentRequest(frozenset(), betas)
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    system = any(isinstance(m, dict) and m.get("role") == "system" for m in messages)
    thinking = any(
        isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), list)
        and any(isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking") for b in m["content"])
        for m in messages
    )
    return SentRequest(frozenset(body), betas, system, thinking)


# -- reading an error -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorParts:
    """An error body as text pieces (every string in it) and its JSON objects."""

    texts: tuple[str, ...]
    objects: tuple[Mapping[str, Any], ...]

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def error_parts(body: bytes) -> ErrorParts:
    """The error's texts, lower-cased (the wordings differ in case; the names looked for are lower-case), at most
    TEXT_LIMIT characters of them."""
    try:
        parsed = json.loads(body[:PARSE_LIMIT])
    except (ValueError, RecursionError):
        return ErrorParts((body[:TEXT_LIMIT].decode("utf-8", "replace").lower(),), ())
    texts: list[str] = []
    objects: list[Mapping[str, Any]] = []
    room = TEXT_LIMIT
    for kind, value in _walk(parsed, 0, [_MAX_NODES]):
        if kind == "object":
            objects.append(value)
        elif room > 0:
            texts.append(value[:room].lower())
            room -= len(texts[-1])
    return ErrorParts(tuple(texts), tuple(objects))


def _walk(value: Any, depth: int, budget: list[int]) -> Iterator[tuple[str, Any]]:
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "[") and len(stripped) > 1:
            try:
                inner = json.loads(stripped)
            except (ValueError, RecursionError):
                inner = None
            if isinstance(inner, (dict, list)):
                yield from _walk(inner, depth + 1, budget)
                return
        yield "text", value
    elif isinstance(value, dict):
        yield "object", value
        for item in value.values():
            yield from _walk(item, depth + 1, budget)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, depth + 1, budget)


def refused_names(parts: ErrorParts) -> set[str]:
    """Every name the error says is not accepted, top-level fields as far as the wording tells."""
    names: set[str] = set()
    for obj in parts.objects:
        param, code = obj.get("param"), obj.get("code")
        if isinstance(param, str) and isinstance(code, str) and code.lower() in _UNSUPPORTED_CODES:
            names.add(param.split(".")[0].split("[")[0])
        loc = obj.get("loc")
        kind, msg = obj.get("type"), obj.get("msg")
        if isinstance(loc, list) and (kind == "extra_forbidden" or (isinstance(msg, str) and
                                                                     _EXTRA_FORBIDDEN.search(msg))):
            path = [p for p in loc if p != "body"] if loc[:1] == ["body"] else loc
            if len(path) == 1 and isinstance(path[0], str):
                names.add(path[0])
    for text in parts.texts:
        names |= _names_in_text(text)
    return names


def _names_in_text(text: str) -> set[str]:
    names: set[str] = set()
    for pattern in _NAME_PATTERNS:
        names.update(match.group(1) for match in pattern.finditer(text))
    for match in _UNRECOGNIZED_LIST.finditer(text):
        names.update(n.strip() for n in match.group(1).split(",") if n.strip())
    for match in _LITELLM_LIST.finditer(text):
        listed = match.group(1)
        found = _DICT_KEY.findall(listed) if listed.startswith("{") else _QUOTED_WORD.findall(listed)
        names.update(found)
    # A field refused anywhere inside a top-level field names that field (only optional ones are ever dropped).
    names.update(match.group(1) for match in _PYDANTIC_PATH.finditer(text))
    if _EXTRA_FORBIDDEN.search(text):
        names.update(match.group(1) for match in _REPR_LOC.finditer(text))
    return names


def mentions(text: str, name: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", text) is not None


# -- OpenAI-type providers ------------------------------------------------------------------------------------------

def openai_fixes(status: int, body: bytes, sent: SentRequest) -> frozenset[Fix]:
    """The fixes for an OpenAI-type provider's error: parameters the balancer added, left out or renamed."""
    if status not in FIXABLE_STATUSES:
        return frozenset()
    parts = error_parts(body)
    named = refused_names(parts)
    fixes: set[Fix] = set()
    for name in named:
        if name in OPENAI_RENAMES and name in sent.keys:
            other = OPENAI_RENAMES[name]
            if mentions(parts.text, other):
                fixes.add(Fix(RENAME, name, other))
        elif name in REASONING_PARAMS:
            fixes.update(Fix(DROP, sent_name) for sent_name in REASONING_PARAMS & sent.keys)
        elif name in OPENAI_DROPPABLE and name in sent.keys:
            fixes.add(Fix(DROP, name))
    return frozenset(fixes)


# -- Anthropic-type providers ---------------------------------------------------------------------------------------

def anthropic_fixes(status: int, body: bytes, sent: SentRequest) -> frozenset[Fix]:
    """The fixes for an Anthropic-type provider's error: beta flags and body fields it does not know, system
    messages it refuses, or (alone, for this request only) thinking signatures it cannot verify."""
    if status not in FIXABLE_STATUSES:
        return frozenset()
    parts = error_parts(body)
    text = parts.text
    if sent.signed_thinking and is_signature_error(text):
        return frozenset({Fix(STRIP_THINKING)})
    fixes: set[Fix] = set()
    if sent.betas and re.search(r"beta", text) and _BETA_REFUSED.search(text):
        fixes.update(Fix(DROP_BETA, beta) for beta in set(sent.betas) if mentions(text, beta))
    droppable = sent.keys - ANTHROPIC_ESSENTIAL
    fixes.update(Fix(DROP, name) for name in refused_names(parts) & droppable)
    if sent.system_messages and any(pattern.search(text) for pattern in _SYSTEM_REFUSED):
        fixes.add(Fix(FOLD_SYSTEM))
    return frozenset(fixes)


def is_signature_error(text: str) -> bool:
    """A thinking block's signature refused: `Invalid \\`signature\\` in \\`thinking\\` block` and its kin."""
    return bool(_SIGNATURE.search(text) and _THINKING.search(text) and _SIGNATURE_REFUSED.search(text))


async def recognised(
    recognise: Callable[[int, bytes, SentRequest], frozenset[Fix]], status: int, body: bytes, sent: SentRequest
) -> frozenset[Fix]:
    """`recognise(status, body, sent)`, off the event loop when the body is long."""
    if status not in FIXABLE_STATUSES:
        return frozenset()
    if len(body) <= INLINE_BODY:
        return recognise(status, body, sent)
    return await asyncio.to_thread(recognise, status, body, sent)
