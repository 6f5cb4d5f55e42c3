"""The model of a request mapped by rewriting the bytes of its value (addon/model_field.py), where the reading
(addon/request_body.py) found that value: property-based, against bodies written with every freedom JSON allows."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addon import json_codec
from addon.model_field import top_level_value_spans, with_model
from addon.request_body import read_object, read_object_in_slices

# -- bodies written by hand: whitespace, escapes, key order and repeated keys chosen by hypothesis ---------------

WHITESPACE = st.sampled_from(["", "", " ", "\n", "\t", " \r\n  "])
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12) | st.sampled_from(
    ["model", '"model": "x"', "claude-sonnet-4", "\\", '"', "é🌍\u2028", "\x00\x1f", "cut \ud83d"])


def scalars() -> st.SearchStrategy[Any]:
    return (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | TEXT)


def json_values() -> st.SearchStrategy[Any]:
    """Plain values, or ("object", [(key, value), ...]) with keys that may repeat (and be "model")."""
    return st.recursive(
        scalars(),
        lambda inner: st.lists(inner, max_size=4)
        | st.lists(st.tuples(st.sampled_from(["model", "a", "content"]) | TEXT, inner), max_size=4).map(
            lambda members: ("object", members)),
        max_leaves=12,
    )


@dataclass
class Writer:
    """Writes a value as JSON, with whitespace and string escapes drawn from hypothesis."""

    draw: Any
    out: str = ""

    def string(self, text: str) -> None:
        if self.draw(st.booleans()):  # every character escaped (keys like "mod\u0065l" too)
            self.out += '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else json.dumps(c)[1:-1]
                                      for c in text) + '"'
        else:
            self.out += json.dumps(text, ensure_ascii=self.draw(st.booleans()))

    def value(self, value: Any) -> None:
        ws = self.draw(WHITESPACE)
        if isinstance(value, tuple):
            self.members(value[1])
        elif isinstance(value, list):
            self.out += "[" + ws
            for i, item in enumerate(value):
                self.out += ("," + self.draw(WHITESPACE)) if i else ""
                self.value(item)
            self.out += self.draw(WHITESPACE) + "]"
        elif isinstance(value, str):
            self.string(value)
        else:
            self.out += json.dumps(value)

    def members(self, members: list[tuple[str, Any]], spans: list[tuple[int, int]] | None = None) -> None:
        self.out += "{" + self.draw(WHITESPACE)
        for i, (key, value) in enumerate(members):
            self.out += ("," + self.draw(WHITESPACE)) if i else ""
            self.string(key)
            self.out += self.draw(WHITESPACE) + ":" + self.draw(WHITESPACE)
            start = len(self.out.encode("utf-8", "surrogatepass"))
            self.value(value)
            if spans is not None and key == "model":
                spans.append((start, len(self.out.encode("utf-8", "surrogatepass"))))
            self.out += self.draw(WHITESPACE)
        self.out += "}"


@st.composite
def bodies(draw: Any) -> tuple[bytes, list[tuple[int, int]]]:
    """A JSON object holding at least one top-level "model" (a string, as the balancer requires; the last
    one is what a JSON reader keeps), with its members in any order; and the byte spans of the model values."""
    members = draw(st.lists(st.tuples(st.sampled_from(["messages", "max_tokens", "a", "model"]) | TEXT,
                                      json_values()), max_size=5))
    models = draw(st.lists(TEXT, min_size=1, max_size=3))
    for model in models:
        members.insert(draw(st.integers(0, len(members))), ("model", model))
    if draw(st.booleans()):  # Claude Code's shape: the model first
        members.insert(0, ("model", models[-1]))
    writer = Writer(draw)
    writer.out = draw(WHITESPACE)
    spans: list[tuple[int, int]] = []
    writer.members(members, spans)
    writer.out += draw(WHITESPACE)
    return writer.out.encode("utf-8", "surrogatepass"), spans


@given(bodies(), TEXT)
@settings(max_examples=250, deadline=None)
def test_the_edited_bytes_read_as_the_original_with_the_model_replaced(case, model):
    body, spans = case
    parsed, span = read_object(body)
    assert_read_as_the_standard_library_does(body, parsed)

    edited = with_model(body, parsed, model, span)

    assert json.loads(edited) == {**json.loads(body), "model": model}
    assert list(json.loads(edited)) == list(parsed)
    if len(spans) > 1:  # a repeated model: written out again with one, so that no reader can take another
        assert [key for key, _ in json.loads(edited, object_pairs_hook=list)].count("model") == 1
    elif parsed["model"] == model:
        assert edited is body
    else:  # only the model's value changed, byte for byte
        start, end = spans[0]
        assert edited == body[:start] + json_codec.dumps(model) + body[end:]


def assert_read_as_the_standard_library_does(body: bytes, parsed: Any) -> None:
    """The same keys in the same order and the same values; below the top level, integers beyond 64 bits may
    be floats until the body is written out again (json_codec.exact)."""
    expected = json.loads(body)
    assert list(parsed) == list(expected)
    assert all(parsed[key] == value for key, value in expected.items() if not isinstance(value, (dict, list)))
    assert json_codec.exact(body, parsed) == expected


@given(bodies())
@settings(max_examples=150, deadline=None)
def test_the_reading_hands_on_a_span_only_for_the_only_model(case):
    body, spans = case
    _, span = read_object(body)
    assert span is None or spans == [span]
    assert top_level_value_spans(body, "model") == spans


def test_a_model_first_and_alone_is_found_by_the_reading():
    body = b'{"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "{\\"model\\": 1}"}], ' \
           b'"tools": [{"input_schema": {"properties": {"model": {"type": "string"}}}}]}'
    parsed, span = read_object(body)
    assert span == (10, 27) and body[10:27] == b'"claude-sonnet-4"'
    assert with_model(body, parsed, "big", span) == body.replace(b'"claude-sonnet-4"', b'"big"')


def test_a_model_that_comes_again_is_not_handed_on_and_the_provider_gets_one_model():
    body = b'{"model": "a", "max_tokens": 1, "model": "b"}'
    parsed, span = read_object(body)
    assert parsed == {"model": "b", "max_tokens": 1} and list(parsed) == ["model", "max_tokens"]
    assert span is None
    # The balancer maps, routes and bills by the last; a provider that read the first would serve "a".
    assert with_model(body, parsed, "m", span) == b'{"model":"m","max_tokens":1}'
    assert with_model(body, parsed, "b", span) == b'{"model":"b","max_tokens":1}'  # even when "b" is kept


def test_a_model_after_other_members_is_found_by_the_slower_reading():
    body = '{"messages": [{"content": "é, \\"model\\": \\"x\\""}], "model": "\\u0063laude"}'.encode()
    parsed = json.loads(body)
    assert read_object(body) == (parsed, None)
    assert with_model(body, parsed, "big") == body.replace(b'"\\u0063laude"', b'"big"')


def test_a_body_the_reading_refuses_is_refused_as_the_standard_library_does():
    for body in (b'{"model": "x",}', b'{"model": "x", 1}', b'{"model": "x"', b'{"model": "x", "a": 1}]'):
        try:
            json.loads(body)
        except ValueError:
            pass
        else:  # pragma: no cover
            raise AssertionError(body)
        try:
            read_object(body)
        except ValueError:
            continue
        raise AssertionError(f"read: {body!r}")


def test_a_body_in_utf16_or_without_a_model_is_written_again():
    parsed = {"model": "a", "max_tokens": 1}
    assert json.loads(with_model(json.dumps(parsed).encode("utf-16"), parsed, "m")) == {**parsed, "model": "m"}
    assert json.loads(with_model(b'{"max_tokens": 5}', {"max_tokens": 5}, "m")) == {"max_tokens": 5, "model": "m"}


def test_a_top_level_integer_beyond_64_bits_is_read_exactly():
    for body in (b'{"model": "m", "max_tokens": 123456789012345678901234567890}',
                 b'{"max_tokens": -9223372036854775809, "model": "m"}'):
        parsed, _ = read_object(body)
        assert parsed == json.loads(body) and type(parsed["max_tokens"]) is int


@given(bodies(), TEXT, st.integers(1, 400))
@settings(max_examples=150, deadline=None)
def test_a_body_read_in_slices_reads_as_the_standard_library_does_and_its_edit_too(case, model, slice_characters):
    body, spans = case
    parsed, span = asyncio.run(read_object_in_slices(body, slice_characters))
    assert parsed == json.loads(body) and list(parsed) == list(json.loads(body))
    assert span == (spans[0] if len(spans) == 1 else None)  # a repeated model: no one place (read_object's too)
    edited = with_model(body, parsed, model, span)
    assert json.loads(edited) == {**parsed, "model": model}
    if span is not None and parsed["model"] != model:
        assert edited == body[:span[0]] + json_codec.dumps(model) + body[span[1]:]


def test_a_body_read_in_slices_lets_the_event_loop_turn_between_slices():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 100}] * 50}).encode()
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    async def main() -> Any:
        counter = asyncio.create_task(count_turns())
        parsed, _ = await read_object_in_slices(body, slice_characters=1000)
        counter.cancel()
        return parsed

    assert asyncio.run(main()) == json.loads(body)
    assert turns >= 5  # 50 messages of about 130 characters, a turn every 1000 characters


@pytest.mark.parametrize("body", [b'{"model": "x",}', b'{"model": "x", "m": [1,]}', b'{"m": [1 2]}',
                                  b'{"model": "x"} 1', b'{"a": 1', b'[1, 2]',
                                  b'{"a": NaN, "b": [Infinity], "model": "\\ud83d"}',
                                  '{"a": "é"}'.encode("utf-16"), b'\xef\xbb\xbf{"a": [1]}'])
def test_a_body_read_in_slices_is_refused_or_read_as_the_standard_library_does(body):
    try:
        expected = json.loads(body)
    except ValueError:
        with pytest.raises(ValueError):
            asyncio.run(read_object_in_slices(body, 1))
        return
    parsed, _ = asyncio.run(read_object_in_slices(body, 1))
    assert json.dumps(parsed) == json.dumps(expected)  # NaN compared as written
    if isinstance(parsed, dict) and "a" in parsed and isinstance(parsed["a"], float):
        assert math.isnan(parsed["a"])


def test_a_long_model_value_is_found_by_the_slower_reading():
    # The reading's quick look at the first member stops after 1024 characters of model name.
    long_name = "m" * 2000
    body = json.dumps({"model": long_name, "max_tokens": 1}).encode()
    parsed, span = read_object(body)
    assert parsed == {"model": long_name, "max_tokens": 1} and span is None
    assert with_model(body, parsed, "big", span) == b'{"model": "big", "max_tokens": 1}'


@pytest.mark.parametrize("body", [b'{"model": "m", "n": [' + b", ".join(b"%d" % i for i in range(300)) + b"]}",
                                  b'{"model": "m", "n": [' + b"1, " * 300 + b"]}",
                                  b'{"model": "m", "n": [' + b"1, " * 300 + b'2], "model": "last"}',
                                  b'{"model": "m", "n": [' + b"1, " * 300 + b"2"])
def test_a_long_list_of_tiny_items_is_read_in_one_piece_as_the_standard_library_does(body):
    try:
        expected = json.loads(body)
    except ValueError:
        with pytest.raises(ValueError):
            asyncio.run(read_object_in_slices(body, 100))
        return
    parsed, span = asyncio.run(read_object_in_slices(body, 100))
    assert parsed == expected
    if span is not None:
        assert json.loads(body[:span[0]] + b'"x"' + body[span[1]:])["model"] == "x"
