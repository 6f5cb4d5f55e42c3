"""The request body for another model: the bytes of the top-level `model` value replaced, everything else left
exactly as the client wrote it (no encoding of the whole body again)."""

from __future__ import annotations

import json
from typing import Any

from . import json_codec
from .json_codec import byte_offset, skip_whitespace

_decoder = json.JSONDecoder()


def with_model(body: bytes, parsed: dict[str, Any], model: str, span: tuple[int, int] | None = None) -> bytes:
    """`body` asking for `model`: the original bytes when it names that model already. `span`: where the
    top-level model's value is in `body`, when known (request_body.py); otherwise it is looked for."""
    if span is None:
        spans = top_level_value_spans(body, "model")
        if spans is not None and len(spans) > 1:
            # The balancer maps, routes and bills by the last (as JSON readers keep it); a provider whose reader
            # kept the first would serve another model than the one charged: it gets one `model` only.
            return json_codec.dumps({**json_codec.exact(body, parsed), "model": model})
        span = spans[0] if spans else None
    if parsed.get("model") == model:
        return body
    if span is None:  # no model in the body, or not UTF-8 (a JSON reader also takes UTF-16 and -32)
        return json_codec.dumps({**json_codec.exact(body, parsed), "model": model})
    start, end = span
    view = memoryview(body)
    return b"".join((view[:start], json_codec.dumps(model), view[end:]))


def top_level_value_spans(body: bytes, key: str) -> list[tuple[int, int]] | None:
    """The byte spans of the values of the top-level members named `key`, in order; None for a body that is not
    a JSON object in UTF-8. Reads the whole body (with the standard library's scanner, one value at a time)."""
    encoding = json.detect_encoding(body)
    if encoding not in ("utf-8", "utf-8-sig"):
        return None
    skipped = 3 if encoding == "utf-8-sig" else 0  # the byte order mark
    text = body[skipped:].decode("utf-8", "surrogatepass")
    try:
        spans = _member_spans(text, key)
    except (ValueError, RecursionError):
        return None
    if spans is None or not spans:
        return spans
    if body.isascii():
        return [(start + skipped, end + skipped) for start, end in spans]
    return [(byte_offset(text, start) + skipped, byte_offset(text, end) + skipped) for start, end in spans]


def _member_spans(text: str, key: str) -> list[tuple[int, int]] | None:
    """Character spans of the top-level values named `key`; None when `text` is not a JSON object."""
    i = skip_whitespace(text, 0)
    if text[i:i + 1] != "{":
        return None
    i = skip_whitespace(text, i + 1)
    spans: list[tuple[int, int]] = []
    if text[i:i + 1] == "}":
        return spans
    while True:
        if text[i:i + 1] != '"':
            return None
        name, i = _decoder.raw_decode(text, i)  # a string: the key
        i = skip_whitespace(text, i)
        if text[i:i + 1] != ":":
            return None
        start = skip_whitespace(text, i + 1)
        _, i = _decoder.raw_decode(text, start)
        if name == key:
            spans.append((start, i))
        i = skip_whitespace(text, i)
        if text[i:i + 1] == "}":
            return spans
        if text[i:i + 1] != ",":
            return None
        i = skip_whitespace(text, i + 1)
