"""A request's JSON body read once, and where its top-level `model` value lies in the bytes (so that mapping the
model rewrites those bytes only, model_field.py).

Claude Code writes `model` first: `{"model":"claude-...","messages":[...],...}`. For such a body the first member
is read on its own and the rest of the object as `{` + the rest: one reading of the bytes, which also tells
whether `model` comes again further on (JSON readers keep the last one); only when it does not is the first
value's place handed on.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, NamedTuple

from mitmproxy import http

from . import json_codec
from .json_codec import byte_offset, skip_whitespace

# The first member when it is `"model": "<string>"` followed by a comma; group 1 is the value. A model name is
# short: the bound keeps the regular expression from walking a client's megabytes character by character.
_MODEL_FIRST = re.compile(
    rb'[ \t\n\r]*\{[ \t\n\r]*"model"[ \t\n\r]*:[ \t\n\r]*("(?:[^"\\]|\\[\s\S]){0,1024}")[ \t\n\r]*,'
)

_INTEGER_LIMIT = 2**63  # orjson reads integers up to 2**64 - 1 and down to -2**63 exactly


class RequestBody(NamedTuple):
    parsed: dict[str, Any] | None
    body: bytes
    problem: str | None  # why the body is refused, in words for the client
    model_span: tuple[int, int] | None = None  # where the top-level model's value (the only one) is in `body`


async def parse_json_object(flow: http.HTTPFlow) -> RequestBody:
    try:
        body = flow.request.get_content(strict=True) or b""
    except ValueError:
        return RequestBody(None, b"", "the request body's content-encoding could not be decoded")
    try:
        if len(body) > SLICED_ABOVE:
            # A turn of the event loop before and after too: mitmproxy's collecting of the body and what the
            # gateway does next are blocks of their own.
            await asyncio.sleep(0)
            parsed, span = await read_object_in_slices(body)
            await asyncio.sleep(0)
        else:
            parsed, span = read_object(body)
    except (ValueError, RecursionError):
        return RequestBody(None, body, "the request body is not valid JSON (or nested too deeply)")
    if not isinstance(parsed, dict):
        return RequestBody(None, body, "the request body must be a JSON object")
    return RequestBody(parsed, body, None, span)


def first_model(body: bytes) -> tuple[str, tuple[int, int]] | None:
    """The top-level model and where its value lies, when it is the body's first member (as Claude Code writes
    it), without reading the rest: what the body asks for unless a later `model` says otherwise."""
    first = _MODEL_FIRST.match(body)
    if first is None:
        return None
    try:
        value = json_codec.loads(body[first.start(1):first.end(1)])
    except ValueError:
        return None
    return (value, first.span(1)) if isinstance(value, str) and value else None


def read_object(body: bytes) -> tuple[Any, tuple[int, int] | None]:
    """What `json.loads(body)` gives (but for integers beyond 64 bits below the top level, see json_codec.exact),
    and the span of the top-level model's value when it is the first member and
    the only `model`. Raises ValueError or RecursionError."""
    first = _MODEL_FIRST.match(body)
    if first is None:
        return _checked(body, json_codec.loads(body)), None
    value = json_codec.loads(body[first.start(1):first.end(1)])
    rest = bytearray(memoryview(body)[first.end() - 1:])  # the one copy of the body this reading makes
    rest[0] = ord("{")  # the comma after the first member: the rest reads as an object of its own
    others = json_codec.loads(rest)
    if not isinstance(others, dict) or not others:  # `{"model":"x",}` is not JSON: the whole body says why
        return _checked(body, json_codec.loads(body)), None
    parsed = {"model": value, **others}
    return _checked(body, parsed), (None if "model" in others else first.span(1))


def _checked(body: bytes, parsed: Any) -> Any:
    """`parsed`, or the standard library's reading when a top-level number may have been an integer beyond 64
    bits (the checks read top-level numbers such as max_tokens; nested ones matter only to a body written out
    again, see json_codec.exact)."""
    if isinstance(parsed, dict) and any(
        type(v) is float and not -_INTEGER_LIMIT < v < _INTEGER_LIMIT for v in parsed.values()
    ):
        return json_codec.exact(body, parsed)
    return parsed


# A body over this size is read in slices, the event loop turning between them: other flows' events are not held
# up for the whole reading (tens of milliseconds for 10 MB, in one piece with orjson, which holds the GIL: a thread
# would not help).
SLICED_ABOVE = 2_000_000
SLICE_CHARACTERS = 256 * 1024


async def read_object_in_slices(
    body: bytes, slice_characters: int = SLICE_CHARACTERS
) -> tuple[Any, tuple[int, int] | None]:
    """`read_object` for big bodies: the top-level members one by one, the items of a top-level array (messages,
    tools) one by one, with a turn of the event loop after every `slice_characters` read. With the standard
    library's reader (about twice orjson's time in all, but in slices)."""
    if json.detect_encoding(body) != "utf-8":  # a byte order mark, UTF-16: rare, read in one piece
        return read_object(body)
    text = body.decode("utf-8", "surrogatepass")
    i = skip_whitespace(text, 0)
    if text[i:i + 1] != "{":
        return read_object(body)  # not an object: the reading in one piece says what it is, or why not JSON
    parsed: dict[str, Any] = {}
    span: tuple[int, int] | None = None
    i = skip_whitespace(text, i + 1)
    if text[i:i + 1] == "}":
        i = skip_whitespace(text, i + 1)
    else:
        while True:
            if text[i:i + 1] != '"':
                raise ValueError(f"a key expected at character {i}")
            key, i = json_codec.standard_value_at(text, i)
            i = skip_whitespace(text, i)
            if text[i:i + 1] != ":":
                raise ValueError(f"':' expected at character {i}")
            start = skip_whitespace(text, i + 1)
            if text[start:start + 1] == "[":
                value, i = await _array_in_slices(text, start, slice_characters)
            else:
                value, i = json_codec.standard_value_at(text, start)
            if key == "model":
                # Only the one `model`'s place: a repeated one is written out again whole (model_field.with_model),
                # as when the body is read in one piece.
                span = (start, i) if "model" not in parsed else None
            parsed[key] = value  # a repeated key keeps its first place and its last value, as in json.loads
            i = skip_whitespace(text, i)
            if text[i:i + 1] == "}":
                i = skip_whitespace(text, i + 1)
                break
            if text[i:i + 1] != ",":
                raise ValueError(f"',' or '}}' expected at character {i}")
            i = skip_whitespace(text, i + 1)
    if i != len(text):
        raise ValueError(f"extra data at character {i}")
    if span is not None and not body.isascii():
        span = (byte_offset(text, span[0]), byte_offset(text, span[1]))
    return parsed, span


async def _array_in_slices(text: str, start: int, slice_characters: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    i = skip_whitespace(text, start + 1)
    if text[i:i + 1] == "]":
        return items, i + 1
    mark, marked_items = i, 0
    while True:
        item, i = json_codec.standard_value_at(text, i)
        items.append(item)
        i = skip_whitespace(text, i)
        if text[i:i + 1] == "]":
            return items, i + 1
        if text[i:i + 1] != ",":
            raise ValueError(f"',' or ']' expected at character {i}")
        i = skip_whitespace(text, i + 1)
        if i - mark >= slice_characters:
            if len(items) - marked_items > slice_characters // TINY_ITEM_CHARACTERS:
                return _rest_in_one_piece(text, i, items)
            await asyncio.sleep(0)
            mark, marked_items = i, len(items)


# Items shorter than this on average (a long list of numbers) cost more to read one by one than the whole list
# costs to read in one piece: the rest of such a list is read in one piece, as before the slices.
TINY_ITEM_CHARACTERS = 64


def _rest_in_one_piece(text: str, index: int, items: list[Any]) -> tuple[list[Any], int]:
    """`items` and the rest of the array, whose next item starts at `text[index]` (after a comma)."""
    if text[index:index + 1] == "]":
        raise ValueError(f"a value expected at character {index}")  # `[1, ]`: "[" + "]" would read as empty
    rest, end = json_codec.standard_value_at("[" + text[index:], 0)
    return items + rest, index + end - 1
