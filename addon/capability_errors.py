"""What a provider's 4xx says it does not accept, as fixes to the request (pure, no I/O).

Conservative by design, because a fix that is remembered changes every client's requests to that provider: a fix is
returned only when the error says, in a wording known for "this field or parameter is not known / not supported",
that a part of the request that was sent and that the request can do without is refused. A wording about a value
(pydantic's `Input should be ...`, `Field required`, a type or enum error, a number out of range) is a genuine
client error and gives no fix, nor does an unknown wording or a name that was not sent: the error goes to the
client as it is. A false negative costs nothing new (the 4xx is returned as before); a false positive would strip
a field from other clients' requests.

Only the error's own words are read: the strings under `message`, `msg`, `detail`, `error`, `errors`, `details`,
`description`, `metadata` and `raw` (JSON inside a string opened too, as OpenRouter nests the upstream error in
`metadata.raw`; a Python repr of pydantic's error list too, as vLLM sends it), never pydantic's `input` or `ctx` nor
any other field that may echo the client's request. In those texts a wording counts only at the start of a clause
(the start of a line or of a `; `-separated part, or right after a prefix without quotes that ends in `: ` or `. `,
such as `litellm.UnsupportedParamsError: `): a name inside quoted text, which may be the client's prompt echoed,
is never read. Structured errors name the field themselves: pydantic's `loc` with type `extra_forbidden`, OpenAI's
`param` with code `unsupported_parameter`.

Wordings understood:
- LiteLLM: `UnsupportedParamsError: openai does not support parameters: ['reasoning_effort'], for model=...`;
- OpenAI: `Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens'
  instead.` (and its `param` / `code: unsupported_parameter`), `Unrecognized request argument supplied: x`;
- pydantic (vLLM, Mistral, FastAPI servers, Anthropic and its relays): `extra_forbidden` with a `loc` naming the
  field, `x: Extra inputs are not permitted` (`x.y` for a known part y of an optional field x);
  `thinking.type: Input tag 'adaptive' ... does not match any of the expected tags` for a tag Anthropic accepts
  (a relay behind Anthropic: fixed for that request only, as other requests may send a tag it takes);
- `'x' is not supported`, `x is not supported` (names with an underscore), `unknown field \\`x\\`` (Rust, Go),
  `Unknown name "x": Cannot find field` (Google), `extraneous key [x] is not permitted` (Bedrock),
  `unexpected keyword argument 'x'`;
- Anthropic's `Unexpected value(s) \\`a\\`, \\`b\\` for the \\`anthropic-beta\\` header`, and other texts that
  reject a beta flag the request sent by its name;
- a `system` message role refused (`Unexpected role "system"`, `messages.3.role: Input should be 'user' or
  'assistant'` for a message 3 that is a system message, `unknown variant \\`system\\``);
- an invalid thinking signature (`messages.1.content.0: Invalid \\`signature\\` in \\`thinking\\` block`).
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .capabilities import (
    DROP,
    DROP_BETA,
    FOLD_SYSTEM,
    OPENAI_DROPPABLE,
    OPENAI_RENAMES,
    RENAME,
    STRIP_THINKING,
    Fix,
)

__all__ = ["ANTHROPIC_ESSENTIAL", "FIXABLE_STATUSES", "INLINE_BODY", "OPENAI_DROPPABLE", "SentRequest",
           "anthropic_fixes", "openai_fixes", "recognised", "sent_anthropic", "sent_openai"]

# An error body longer than this is read in a thread (a 16 KiB one takes tens of ms; other streams go on).
INLINE_BODY = 2048
# Statuses whose errors are read for a fix: what servers answer for a request they refuse (FastAPI says 422).
FIXABLE_STATUSES = frozenset({400, 422})
# The most of an error body looked at (the names are in an error's first lines; a longer body is a traceback).
TEXT_LIMIT = 16 * 1024
PARSE_LIMIT = 256 * 1024  # of a JSON error body, parsed to find its texts
_MAX_NODES = 2000
_MAX_DEPTH = 12

# Whichever way the balancer asked for reasoning, a server that refuses any of these refuses what was sent.
REASONING_PARAMS = frozenset({"reasoning_effort", "reasoning", "thinking"})
# Anthropic body fields an answer cannot do without: never dropped. Every other top-level field may be, when a
# provider refuses it by name (Claude Code adds new ones: a relay that does not know them still serves); only the
# optional fields the balancer knows are remembered (capabilities.ANTHROPIC_OPTIONAL).
ANTHROPIC_ESSENTIAL = frozenset({
    "model", "messages", "max_tokens", "system", "tools", "tool_choice", "stream", "stop_sequences",
})
# Parts of optional Anthropic fields that a relay behind Anthropic may not know yet (`output_config.format:
# Extra inputs are not permitted` refuses output_config); an unknown part is the client's mistake.
KNOWN_PARTS = {
    "output_config": frozenset({"effort", "format"}),
    "thinking": frozenset({"type", "budget_tokens", "display"}),
    "context_management": frozenset({"edits"}),
    "metadata": frozenset({"user_id"}),
}
# Tags Anthropic accepts that an older relay may not (`Input tag 'adaptive' ... does not match`).
KNOWN_TAGS = {"thinking": frozenset({"adaptive", "enabled", "disabled"})}

# The keys of an error object that hold the error's own words (never `input`, `ctx` or other echoes).
_OWN_KEYS = frozenset({"message", "msg", "detail", "details", "error", "errors", "description", "metadata", "raw"})

_Q = "[`'\"]"
_NAME = r"([a-z_][a-z0-9_]*)"
# `not allowed when ...` and its kin are conditions on a value, not a refusal of the name.
_REFUSED = (r"(?:not supported|unsupported|not allowed|not permitted|not recogni[sz]ed|not available)"
            r"(?!\s+(?:when|unless|if|for (?:the )?(?:value|type))\b)")
# Wordings naming a refused field or parameter, each matched at the start of a clause.
_CLAUSE_WORDINGS = [
    # `'reasoning_effort' is not supported`, `"tool_choice" = "required" is not supported`
    re.compile(_Q + _NAME + _Q + r"\s*(?:=\s*\S{1,40}\s+)?(?:(?:parameter|param|field|argument|property|key)"
               r"\s+)?(?:is\s+|are\s+)?" + _REFUSED),
    # `reasoning_effort is not supported with this model` (unquoted: only names with an underscore)
    re.compile(r"([a-z]+_[a-z0-9_]+)\s*(?:=\s*\S{1,40}\s+)?(?:(?:parameter|param|field)\s+)?"
               r"(?:is|are)\s+" + _REFUSED),
    # `parameter user is not supported`, `user parameter is not supported`
    re.compile(r"(?:the\s+)?(?:parameter|param|field|argument|property)\s+" + _Q + "?" + _NAME + _Q +
               r"?\s+(?:is|are)\s+" + _REFUSED),
    re.compile(r"(?:the\s+)?" + _Q + "?" + _NAME + _Q + r"?\s+(?:parameter|param|field|argument)\s+(?:is|are)\s+" +
               _REFUSED),
    # `Unsupported parameter: 'max_tokens'`, `unknown field \`x\``, `Unknown name "x"`, `extraneous key [x]`
    re.compile(r"(?:unsupported|unknown|unexpected|unrecogni[sz]ed|extraneous)\s+(?:request\s+)?"
               r"(?:parameter|argument|field|property|key|name|param)s?\s?(?::\s?)?(?:\[\s?)?" + _Q + "?" + _NAME),
    # `deepseek-reasoner does not support the parameter \`parallel_tool_calls\``
    re.compile(r"(?:[\w./:-]+\s+)?does not support (?:the )?(?:param(?:eter)?|field|argument|property)\s*:?\s*" +
               _Q + _NAME + _Q),
    # Python servers: `create() got an unexpected keyword argument 'reasoning_effort'`
    re.compile(r"(?:[\w.]+\(\)\s+)?got an unexpected keyword argument\s+" + _Q + _NAME + _Q),
]
# `Unrecognized request arguments supplied: a, b` (Azure, older OpenAI)
_UNRECOGNIZED_LIST = re.compile(r"unrecognized request arguments? supplied\s*:\s*([\w ,]+)")
# LiteLLM: `openai does not support parameters: ['a', 'b']` or a dict of them (older versions)
_LITELLM_LIST = re.compile(r"(?:[\w./:-]+\s+)?does not support (?:the )?(?:following )?param(?:eter)?s\s*:?\s*"
                           r"(\[[^\]]{0,1000}\]|\{[^}]{0,1000}\})")
_QUOTED_WORD = re.compile(_Q + _NAME + _Q)
_DICT_KEY = re.compile(_Q + _NAME + _Q + r"\s*:")
# pydantic: `context_management: Extra inputs are not permitted`, `output_config.format: Extra inputs ...`
_PYDANTIC_EXTRA = re.compile(r"([a-z_]\w*)(?:\.([\w-]+))?\s*:\s*extra (?:inputs|fields) (?:are )?not permitted")
# pydantic's tagged union: `thinking.type: Input tag 'adaptive' found using 'type' does not match any of the
# expected tags: 'enabled', 'disabled'`
_PYDANTIC_TAG = re.compile(r"([a-z_]\w*)(?:\.type)?\s*:\s*input tag '([^']{1,80})' found using 'type' does not "
                           r"match any of the expected tags")
_EXTRA_FORBIDDEN = re.compile(r"extra (?:inputs|fields) (?:are )?not permitted")
# vLLM's repr of pydantic's list, when it is no Python literal: its first error only.
_REPR_FIRST = re.compile(r"\[\s*\{\s*'type'\s*:\s*'extra_forbidden'\s*,\s*'loc'\s*:\s*\(\s*(?:'body'\s*,\s*)?'" +
                         _NAME + r"'\s*,?\s*\)")
_UNSUPPORTED_CODES = frozenset({"unsupported_parameter", "unsupported_value", "unknown_parameter",
                                "unrecognized_parameter"})

# Where a clause may start after a prefix: `litellm.UnsupportedParamsError: `, `Invalid JSON payload received. `
_PREFIX_END = re.compile(r"[:.]\s+")
_PREFIX_QUOTES = re.compile(r"[`'\"]")
_PREFIX_LIMIT = 160
# A message string in JSON text too long to parse: `"message": "..."`
_MESSAGE_STRING = re.compile(r'"(?:message|msg|detail|description)"\s*:\s*"((?:[^"\\]|\\.)*)')
_CLAUSE_SPLIT = re.compile(r"\n|;\s+")
# Runs of blanks become one space before any wording is matched: the patterns' optional blanks around optional
# punctuation could otherwise split a long run in very many ways (a provider's 400 of spaces would hold the event
# loop, and a thread would not help: the regex engine keeps the GIL).
_BLANKS = re.compile(r"[ \t\r\f\v]+")
# A wording starts within the first words of its clause; the rest of a long clause is never read.
_CLAUSE_LIMIT = 1000

_BETA_CLAUSE = re.compile(r"(?:unexpected|invalid|unsupported|unknown|unrecogni[sz]ed|disallowed)\b|"
                          r"(?:anthropic-)?beta\b.{0,80}?(?:not supported|unsupported|not allowed|not permitted|"
                          r"not recogni[sz]ed|not enabled|not available)")
_SYSTEM_REFUSED = [
    re.compile(r"unexpected role\W{0,3}system"),
    re.compile(r"(?:invalid|unknown|unsupported|unexpected)\s+(?:message\s+)?role\W{0,3}(?:\w+\W{1,3})?system"),
    re.compile(r"(?:the\s+)?role\W{0,3}system\W{0,3}(?:is\s+)?" + _REFUSED),
    re.compile(r"unknown variant\s*" + _Q + r"system" + _Q),
    re.compile(r"system\W{0,3}(?:is\s+)?" + _REFUSED + r"\s+as\s+(?:an?\s+)?(?:message\s+|input\s+)?role"),
]
# pydantic's literal error on a message's role: only when that message is a system message the request sent.
_ROLE_LITERAL = re.compile(r"messages\.(\d+)\.role\s*:\s*input should be ")
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
    system_at: frozenset[int] = frozenset()  # the positions of the system messages


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
    system_at = frozenset(i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "system")
    thinking = any(
        isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), list)
        and any(isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking") for b in m["content"])
        for m in messages
    )
    return SentRequest(frozenset(body), betas, bool(system_at), thinking, system_at)


# -- reading an error -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorParts:
    """An error body as its own texts (its messages, lower-cased) and its JSON objects."""

    texts: tuple[str, ...]
    objects: tuple[Mapping[str, Any], ...]

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    def clauses(self) -> Iterator[str]:
        for text in self.texts:
            yield from clauses(text)


def error_parts(body: bytes) -> ErrorParts:
    """The error's own texts, lower-cased (the wordings differ in case; the names looked for are lower-case), at
    most TEXT_LIMIT characters of them."""
    try:
        parsed = json.loads(body[:PARSE_LIMIT])
    except (ValueError, RecursionError):
        head = body[:TEXT_LIMIT].decode("utf-8", "replace")
        if head.lstrip()[:1] in ("{", "["):  # JSON too long to parse whole: its first message strings
            return ErrorParts(tuple(_json_string(m.group(1)).lower() for m in _MESSAGE_STRING.finditer(head)), ())
        return ErrorParts((head.lower(),), ())
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


def _json_string(quoted: str) -> str:
    """A JSON string's text, cut short at its end when the body was (a broken escape there dropped)."""
    cut = quoted.rfind("\\")
    for text in (quoted, quoted[:cut] if cut >= len(quoted) - 6 else quoted):
        try:
            value = json.loads('"' + text + '"')
        except ValueError:
            continue
        return value if isinstance(value, str) else ""
    return ""


def _walk(value: Any, depth: int, budget: list[int]) -> Iterator[tuple[str, Any]]:
    """The texts and objects of an error, through the keys that hold its own words only."""
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        inner = _structure_in(value)
        if inner is not None:
            yield from _walk(inner, depth + 1, budget)
        else:
            yield "text", value
    elif isinstance(value, dict):
        yield "object", value
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in _OWN_KEYS:
                yield from _walk(item, depth + 1, budget)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item, depth + 1, budget)


def _structure_in(text: str) -> dict[Any, Any] | list[Any] | None:
    """JSON inside a string (OpenRouter's `raw`), or a Python repr of pydantic's error list (vLLM)."""
    stripped = text.strip()
    if stripped[:1] not in ("{", "[") or len(stripped) < 2 or len(stripped) > TEXT_LIMIT:
        return None
    try:
        inner = json.loads(stripped)
    except (ValueError, RecursionError):
        try:
            inner = ast.literal_eval(stripped)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return inner if isinstance(inner, (dict, list)) else None


def clauses(text: str) -> Iterator[str]:
    """Where a wording may start in a text: each line or `; `-separated part, and what follows a prefix without
    quotes that ends in `: ` or `. ` (never what follows quoted text, which may be the client's own)."""
    for part in _CLAUSE_SPLIT.split(text):
        part = _BLANKS.sub(" ", part[: _CLAUSE_LIMIT * 4]).lstrip()[:_CLAUSE_LIMIT]
        if not part:
            continue
        yield part
        for match in _PREFIX_END.finditer(part, 0, _PREFIX_LIMIT):
            if _PREFIX_QUOTES.search(part, 0, match.start()):
                break
            yield part[match.end():]


def _top_field(path: list[Any]) -> str | None:
    """The top-level field a pydantic path names: the field itself, or an optional field by a known part."""
    if len(path) == 1 and isinstance(path[0], str):
        return path[0]
    if len(path) == 2 and isinstance(path[0], str) and path[1] in KNOWN_PARTS.get(path[0], ()):
        return path[0]
    return None


def refused_names(parts: ErrorParts) -> set[str]:
    """Every name the error says is not known or not supported, top-level fields as far as the wording tells."""
    names: set[str] = set()
    for obj in parts.objects:
        param, code = obj.get("param"), obj.get("code")
        if isinstance(param, str) and isinstance(code, str) and code.lower() in _UNSUPPORTED_CODES:
            names.add(param.split(".")[0].split("[")[0])
        loc = obj.get("loc")
        kind, msg = obj.get("type"), obj.get("msg")
        if isinstance(loc, (list, tuple)) and (kind == "extra_forbidden" or (
                isinstance(msg, str) and _EXTRA_FORBIDDEN.match(msg.lower()))):
            path = list(loc[1:]) if loc[:1] in (["body"], ("body",)) else list(loc)
            name = _top_field(path)
            if name is not None:
                names.add(name)
    for text in parts.texts:
        first = _REPR_FIRST.match(text.lstrip())
        if first:
            names.add(first.group(1))
    for clause in parts.clauses():
        names |= _names_in_clause(clause)
    return names


def _names_in_clause(clause: str) -> set[str]:
    names: set[str] = set()
    for pattern in _CLAUSE_WORDINGS:
        match = pattern.match(clause)
        if match:
            names.add(match.group(1))
    match = _UNRECOGNIZED_LIST.match(clause)
    if match:
        names.update(n.strip() for n in match.group(1).split(",") if n.strip())
    match = _LITELLM_LIST.match(clause)
    if match:
        listed = match.group(1)
        names.update(_DICT_KEY.findall(listed) if listed.startswith("{") else _QUOTED_WORD.findall(listed))
    match = _PYDANTIC_EXTRA.match(clause)
    if match:
        name = _top_field([match.group(1)] + ([match.group(2)] if match.group(2) else []))
        if name is not None:
            names.add(name)
    return names


def refused_tags(parts: ErrorParts) -> set[str]:
    """Optional fields refused for a tag Anthropic accepts (a relay behind Anthropic): `thinking` for `adaptive`."""
    fields: set[str] = set()
    for clause in parts.clauses():
        match = _PYDANTIC_TAG.match(clause)
        if match and match.group(2) in KNOWN_TAGS.get(match.group(1), ()):
            fields.add(match.group(1))
    return fields


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
    if sent.betas:
        for clause in parts.clauses():
            if "beta" in clause and _BETA_CLAUSE.match(clause):
                fixes.update(Fix(DROP_BETA, beta) for beta in set(sent.betas) if mentions(clause, beta.lower()))
    droppable = sent.keys - ANTHROPIC_ESSENTIAL
    fixes.update(Fix(DROP, name) for name in refused_names(parts) & droppable)
    # A tag refused by a relay that lags Anthropic: left out of this request only (others may send one it takes).
    fixes.update(Fix(DROP, name, once=True) for name in refused_tags(parts) & droppable
                 if Fix(DROP, name) not in fixes)
    if sent.system_at and _system_refused(parts, sent):
        fixes.add(Fix(FOLD_SYSTEM))
    return frozenset(fixes)


def _system_refused(parts: ErrorParts, sent: SentRequest) -> bool:
    for clause in parts.clauses():
        if any(pattern.match(clause) for pattern in _SYSTEM_REFUSED):
            return True
        literal = _ROLE_LITERAL.match(clause)
        if literal and int(literal.group(1)) in sent.system_at and "'system'" not in clause:
            return True
    return False


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
