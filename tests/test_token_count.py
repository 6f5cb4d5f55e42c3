"""Local token counting: every part of a request counts, images by their size, no network, fast enough."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addon import token_count
from addon.token_count import IMAGE_MAX_TOKENS, count_input_tokens, image_size, image_tokens
from samples import claude_code_like_request

BASE = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "Hello there"}]}


def png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def with_(**extra) -> int:
    return count_input_tokens({**BASE, **extra})


def test_every_part_of_the_request_counts():
    base = count_input_tokens(BASE)
    assert base > 0
    assert with_(system="You are a careful assistant who explains code.") > base
    assert with_(system=[{"type": "text", "text": "You are a careful assistant."}]) > base
    tool = {"name": "Read", "description": "Reads a file from the local filesystem and returns it.",
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}
    assert with_(tools=[tool]) > with_(tools=[{"name": "Read", "input_schema": {}}]) > base
    turn = [{"role": "assistant", "content": [
        {"type": "thinking", "thinking": "The user wants the file.", "signature": "s"},
        {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/etc/hosts"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "127.0.0.1 localhost\n" * 20}]}]}]
    with_turn = count_input_tokens({**BASE, "messages": BASE["messages"] + turn})
    assert with_turn > base + 100


def test_counts_grow_with_text_like_a_tokenizer():
    short = with_(messages=[{"role": "user", "content": "word " * 100}])
    long = with_(messages=[{"role": "user", "content": "word " * 1000}])
    assert 900 <= long - short <= 1000  # "word" is one token each


def test_images_count_by_their_size():
    small = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png(200, 150)).decode()}
    big = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(png(4000, 3000)).decode()}
    assert image_size(png(200, 150)) == (200, 150)
    assert image_tokens(small) == 40  # 200 * 150 / 750
    assert image_tokens(big) == IMAGE_MAX_TOKENS
    assert image_tokens({"type": "url", "url": "https://example.test/a.png"}) == IMAGE_MAX_TOKENS
    message = {"role": "user", "content": [{"type": "image", "source": small}, {"type": "text", "text": "what?"}]}
    assert count_input_tokens({**BASE, "messages": [message]}) >= 40


def test_special_token_text_is_counted_not_rejected():
    assert with_(messages=[{"role": "user", "content": "<|endoftext|> and <|fim_prefix|>"}]) > 3


@pytest.mark.parametrize("body", [{}, {"messages": "nope"}, {"messages": [None, 3, {"content": None}]},
                                  {"messages": [{"role": "user", "content": [{"type": "mystery", "x": 1}]}]}])
def test_odd_bodies_count_zero_or_more_without_raising(body):
    assert count_input_tokens(body) >= 0


def test_a_large_claude_code_request_is_counted():
    """About 200 KB, shaped like Claude Code's. How fast this is lives in scripts/bench-count-tokens."""
    body = claude_code_like_request()
    assert len(json.dumps(body)) > 200_000
    assert count_input_tokens(body) > 40_000


class _Recording:
    """The real encoding, noting how long each text it encodes is."""

    def __init__(self, encoding):
        self.encoding = encoding
        self.lengths: list[int] = []

    def encode_ordinary(self, text: str) -> list[int]:
        self.lengths.append(len(text))
        return self.encoding.encode_ordinary(text)


def test_a_large_body_is_encoded_in_pieces_and_counts_as_a_whole(monkeypatch):
    """The tokens of one encode call come back as a Python list under the GIL: a megabyte at once held the event
    loop up for ~90 ms while a route's count ran in a thread. Pieces count the same as the whole text."""
    words = " ".join(f"word{i % 977} and more" for i in range(120_000))
    body = {**BASE, "messages": [{"role": "user", "content": words}], "system": "Be brief."}
    whole = token_count._encoding().encode_ordinary("\n".join(["Be brief.", words]))
    recording = _Recording(token_count._encoding())
    monkeypatch.setattr(token_count, "_encoding", lambda: recording)

    counted = count_input_tokens(body)

    assert len(words) > 4 * token_count.ENCODE_PIECE
    assert max(recording.lengths) <= token_count.ENCODE_PIECE
    assert sum(recording.lengths) == len(words) + len("Be brief.\n")
    overhead = count_input_tokens(BASE) - len(token_count._encoding().encode_ordinary("Hello there"))
    assert counted == len(whole) + overhead


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=" ab\n", max_size=400), st.integers(min_value=1, max_value=50))
def test_text_pieces_cover_the_text_in_order_none_too_long(text, size):
    pieces = token_count.text_pieces(text, size)
    assert "".join(pieces) == text
    assert all(len(piece) <= size for piece in pieces)
    assert all(piece for piece in pieces[:-1])
