"""log_text.py, the line per request built from hostile text, and error bodies bounded before they are relayed."""

from __future__ import annotations

import json
import logging

import pytest

from addon.errors import MAX_MESSAGE_CHARS, bounded_error_body
from addon.log_text import LOG_FIELD_CHARS, json_safe, loggable
from addon.request_log import REQUEST_FIELD, JsonLinesFormatter, summary_line


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, üñí, 漢字 and emoji 🙂", "plain text, üñí, 漢字 and emoji 🙂"),
        ("a\nb\r\nc\td", "a\\nb\\r\\nc\\td"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x00\x07\x7f\x85\x9b", "\\x00\\x07\\x7f\\x85\\x9b"),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("\u202eevil\u2066", "\\u202eevil\\u2066"),
        ("a literal \\n stays", "a literal \\n stays"),
    ],
)
def test_loggable_escapes_every_control_character_visibly(text, shown):
    assert loggable(text) == shown
    assert len(loggable(text).splitlines()) <= 1


def test_loggable_bounds_before_escaping():
    assert loggable("x" * 5000) == "x" * (LOG_FIELD_CHARS - 1) + "…"
    assert loggable("x" * 5000, limit=None) == "x" * 5000
    assert loggable(12) == "12"


def test_json_safe_escapes_what_json_dumps_leaves_raw():
    document = json.dumps({"m": "a\x7fb\x85c\u2028d\x1be"}, ensure_ascii=False)
    safe = json_safe(document)
    assert json.loads(safe) == json.loads(document)
    assert safe == '{"m": "a\\u007fb\\u0085c\\u2028d\\u001be"}'


def hostile_request() -> dict:
    forged = "\nreq deadbeef messages m -> p/m 200 | attempts: p 200 1ms\r\x1b[2K"
    return {
        "request_id": "1a2b3c4d", "kind": "messages", "path": "/v1/messages", "requested_model": "model" + forged,
        "provider": "p", "model": "model" + forged, "stream": False, "status": 200,
        "attempts": [{"provider": "q", "outcome": "HTTP 529 overloaded_error: busy" + forged, "ms": 3.0},
                     {"provider": "p", "outcome": "200", "ms": 4.0}],
        "ttfb_ms": 5.0, "total_ms": 9.0, "usage": {"input_tokens": 1, "output_tokens": 2},
        "stop_reason": "end_turn" + forged + "x" * 5000,
    }


def test_summary_line_is_one_line_whatever_it_is_given():
    line = summary_line(hostile_request())
    assert line.splitlines() == [line]
    assert "\x1b" not in line and "\r" not in line
    assert line.startswith("req 1a2b3c4d messages model\\nreq deadbeef messages m -> p/m 200")
    assert "q HTTP 529 overloaded_error: busy\\nreq deadbeef" in line
    assert len(line) < 6 * LOG_FIELD_CHARS  # the stop reason was cut, not 5000 characters long


def test_json_lines_keep_the_text_but_no_raw_control_character():
    record = logging.LogRecord("balancer", logging.INFO, __file__, 1, "line", None, None)
    setattr(record, REQUEST_FIELD, {**hostile_request(), "stop_reason": "a\x85b\u2028c"})
    text = JsonLinesFormatter().format(record)
    assert text.splitlines() == [text] and "\x85" not in text and "\u2028" not in text
    assert json.loads(text)["request"]["stop_reason"] == "a\x85b\u2028c"


def test_error_bodies_are_bounded_in_every_string():
    long = "e" * 5000
    anthropic = json.dumps({"type": "error", "error": {"type": "api_error", "message": long}}).encode()
    error = json.loads(bounded_error_body(anthropic))["error"]
    assert error["type"] == "api_error" and len(error["message"]) == MAX_MESSAGE_CHARS and error["message"][-1] == "…"
    assert json.loads(bounded_error_body(json.dumps({"detail": [long, {"msg": long}]}).encode())) == {
        "detail": [long[: MAX_MESSAGE_CHARS - 1] + "…", {"msg": long[: MAX_MESSAGE_CHARS - 1] + "…"}]
    }
    html = b"<html>" + b"oops " * 2000 + b"</html>"
    assert len(bounded_error_body(html).decode()) == MAX_MESSAGE_CHARS
    short = json.dumps({"type": "error", "error": {"type": "x", "message": "short"}}).encode()
    assert bounded_error_body(short) is short  # within the limit: the provider's bytes as they were
    many_short = json.dumps({"error": {"message": "m", "pad": ["x"] * 2000}}).encode()
    assert bounded_error_body(many_short) is many_short
