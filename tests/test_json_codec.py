"""addon/json_codec.py: orjson where it gives what the standard library gives, the standard library where not."""

from __future__ import annotations

import json
import math

import orjson
import pytest

from addon import json_codec

BIG = 123456789012345678901234567890


@pytest.mark.parametrize("body", [
    b'{"text": "cut \\ud83d"}',  # a lone surrogate, escaped
    b'{"text": "cut \xed\xa0\xbd"}',  # the same written raw (the standard library reads it too)
    b'\xef\xbb\xbf{"a": 1}',  # a byte order mark
    '{"a": "é"}'.encode("utf-16"),
    b'{"a": ' + b"[" * 1100 + b"]" * 1100 + b"}",  # deeper than orjson goes
])
def test_what_orjson_refuses_is_read_by_the_standard_library(body):
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert json_codec.loads(body) == json.loads(body)


def test_nan_and_infinity_are_read_and_written_back_as_the_client_sent_them():
    parsed = json_codec.loads(b'{"t": NaN, "u": Infinity, "v": -Infinity, "w": 1e400, "x": 0.5}')
    assert math.isnan(parsed["t"]) and parsed["u"] == math.inf and parsed["v"] == -math.inf
    assert parsed["w"] == math.inf and type(parsed["x"]) is float
    assert orjson.dumps(float("nan")) == b"null"  # what orjson alone would have sent
    assert json_codec.dumps(parsed) == b'{"t":NaN,"u":Infinity,"v":-Infinity,"w":Infinity,"x":0.5}'


def test_integers_beyond_64_bits_are_read_exactly_when_asked_and_written_exactly():
    body = b'{"a": {"n": 123456789012345678901234567890}, "b": -9223372036854775809, "c": 18446744073709551615}'
    parsed = json_codec.loads(body)
    assert parsed["a"]["n"] != BIG  # orjson makes a float of it, without a word
    assert json_codec.exact(body, parsed) == json.loads(body)
    written = json_codec.dumps(json_codec.exact(body, parsed))
    assert written == json.dumps(json.loads(body), separators=(",", ":")).encode()
    small = b'{"a": 922337203685477580, "text": "call 1234567890"}'
    assert json_codec.exact(small, json_codec.loads(small)) == json.loads(small)
    assert not json_codec.may_hold_long_integer(small)
    for number, long in ((b"18446744073709551615", True), (b"1733100000000000000", False),
                         (b"-9223372036854775809", True), (b"-922337203685477580", False)):
        assert json_codec.may_hold_long_integer(b'{"ns": ' + number + b"}") is long


def test_a_lone_surrogate_is_written_escaped_and_other_text_as_utf8():
    assert json_codec.dumps({"t": "cut \ud83d"}) == b'{"t":"cut \\ud83d"}'
    assert json_codec.dumps({"t": "é🌍", "n": [1, 2.5, None, True]}) == '{"t":"é🌍","n":[1,2.5,null,true]}'.encode()


def test_orjson_reads_and_writes_ordinary_json_as_the_standard_library_does():
    body = json.dumps({"a": [1, -0.0, 1e-7, 1e16, "é\u2028\x1f", None, False], "a2": {"x": {}}}).encode()
    assert json_codec.loads(body) == json.loads(body)
    assert json.loads(json_codec.dumps(json.loads(body))) == json.loads(body)
