"""The pure parts of the body limits: bounded decoding, the chunked-body collector, canonical request targets."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from addon.body_decoding import TooLarge, Undecodable, UnknownEncoding, decode_body
from addon.body_limits import Collector
from addon.request_target import Canonical, Refused, canonical_target

TEXT = b'{"model": "m", "messages": []}' * 50
ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": lambda data: brotli.compress(data, quality=5),  # the default (11) takes seconds for the 64 MiB bomb
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_each_encoding_decodes_and_is_capped(coding):
    encoded = ENCODERS[coding](TEXT)
    assert decode_body(encoded, coding, len(TEXT)) == TEXT
    with pytest.raises(TooLarge):
        decode_body(encoded, coding, len(TEXT) - 1)
    with pytest.raises(Undecodable):
        decode_body(encoded[: len(encoded) // 2], coding, 10 * len(TEXT))


def test_raw_deflate_and_concatenated_gzip_members_and_lists_of_encodings():
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert decode_body(raw.compress(TEXT) + raw.flush(), "deflate", 10**6) == TEXT
    assert decode_body(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 10) == b"abcd"
    assert decode_body(brotli.compress(gzip.compress(TEXT)), "gzip, br", 10**6) == TEXT
    assert decode_body(TEXT, "identity", 10**6) == TEXT
    with pytest.raises(UnknownEncoding):
        decode_body(TEXT, "compress", 10**6)
    with pytest.raises(Undecodable):
        decode_body(zlib.compress(TEXT) + b"junk", "deflate", 10**6)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_bomb_is_refused_at_the_cap(coding):
    bomb = ENCODERS[coding](bytes(64 * 1024 * 1024))
    with pytest.raises(TooLarge):
        decode_body(bomb, coding, 1024 * 1024)


def test_the_collector_keeps_a_body_up_to_the_limit_and_forgets_it_past_it():
    collector = Collector(10)
    assert collector(b"12345") == [] and collector(b"67890") == []
    assert collector.body() == b"1234567890" and not collector.over
    collector(b"x")
    assert collector.over and collector.body() == b""
    collector(b"more")
    assert collector.body() == b""


@pytest.mark.parametrize("target, expected", [
    ("/v1/messages?beta=true", Canonical("/v1/messages", "?beta=true")),
    ("//v1//messages/", Canonical("/v1/messages", "")),
    ("/%76%31/messages", Canonical("/v1/messages", "")),
    ("/", Canonical("/", "")),
    ("/v1/models?x=/../y", Canonical("/v1/models", "?x=/../y")),
])
def test_odd_spellings_of_a_path_become_its_canonical_form(target, expected):
    assert canonical_target(target) == expected


@pytest.mark.parametrize("target, status", [
    ("/v1/../providers", 400), ("/v1/%2e%2E/x", 400), ("/v1/./messages", 400), ("/v1%2fmessages", 400),
    ("/v1%5Cmessages", 400), ("/v1\\messages", 400), ("/v1/a%00b", 400), ("/v1/messages;x", 404),
    ("/v1/a b", 404), ("v1/messages", 400), ("/" + "a" * 5000, 404),
])
def test_targets_that_escape_or_smuggle_a_path_are_refused_with_400_or_404(target, status):
    result = canonical_target(target)
    assert isinstance(result, Refused) and result.status == status


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet="/.%2eEfF5cC\\;av1msg", max_size=30))
def test_a_canonical_path_never_holds_a_dot_segment_escape_or_empty_segment(tail):
    result = canonical_target("/" + tail)
    if isinstance(result, Canonical):
        segments = result.path.split("/")[1:]
        assert all(s not in (".", "..") for s in segments)
        assert "%" not in result.path and "\\" not in result.path
        assert "//" not in result.path and (result.path == "/" or not result.path.endswith("/"))
        assert canonical_target(result.target) == result  # canonical is a fixed point
