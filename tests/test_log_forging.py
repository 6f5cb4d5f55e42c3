"""The log cannot be forged: whatever providers and clients write (error messages, model names, stop reasons, request
bodies), each request is one line of the log, no raw control character reaches it, and relayed error messages are
bounded. Runs the real mitmdump against fake providers; the last test is a property (hypothesis) on one balancer."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon.errors import MAX_MESSAGE_CHARS
from balancer_proc import BalancerProcess
from fakes import FakeProvider, Raw, Status
from helpers import anthropic_message, anthropic_provider, wait_until

KEY = "sk-prov-first-1234567890"
FORGED = "req deadbeef messages claude-sonnet-4 -> second/claude-sonnet-4 200 | attempts: second 200 1ms"
EVIL = f"it broke\n{FORGED}\r\n\x1b[2K\x1b[31mkey {KEY}\x1b[0m\x85{FORGED}\u2028{FORGED}\x00\x7f\x9b"
# What must never be raw in a log line (the log's own line ends aside).
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\.\d{3}\] ")
CONNECTION_EVENT = re.compile(r"^\[\d\d:\d\d:\d\d\.\d{3}\]\[")  # mitmproxy's own, at DEBUG: "[time][peer] ..."
REQUEST_LINE = re.compile(r"^req ([0-9a-f]{8}) ")  # the line per request, and the DEBUG line of what was sent
SUMMARY = re.compile(r"^req [0-9a-f]{8} messages ")


def message_lines(lines: list[str]) -> list[str]:
    """The balancer's log lines (not mitmproxy's connection events), without mitmproxy's timestamps."""
    return [TIMESTAMP.sub("", line) for line in lines if not CONNECTION_EVENT.match(line)]


def summaries(lines: list[str]) -> list[str]:
    return [line for line in lines if SUMMARY.match(line)]


def answer_with_stop_reason(stop_reason: str) -> Raw:
    message = {**anthropic_message("claude-sonnet-4", "hi"), "stop_reason": stop_reason}
    return Raw(json.dumps(message).encode(), content_type="application/json")


def overloaded(message: str) -> Status:
    return Status(529, {"type": "error", "error": {"type": "overloaded_error", "message": message}})


@pytest.fixture(scope="module")
def forging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BalancerProcess, FakeProvider, FakeProvider]]:
    """One balancer at DEBUG (request bodies in the log too), with a JSON-lines file; `first` always fails over
    (no cooldown, so it is tried every time), `second` answers."""
    workdir = tmp_path_factory.mktemp("forging")
    with FakeProvider() as first, FakeProvider() as second:
        process = BalancerProcess(workdir, extra_args=("--set", "flow_detail=0"))
        process.write_providers(
            [{**anthropic_provider("first", first.url), "auth_value": KEY}, anthropic_provider("second", second.url)],
            failure_cooldown=0, log_level="DEBUG", log_file=str(workdir / "balancer.jsonl"),
        )
        with process:
            yield process, first, second


def post(process: BalancerProcess, model: str, pretty: bool = False) -> httpx.Response:
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    content = json.dumps(body, indent=2 if pretty else None).encode()  # pretty: raw newlines in the DEBUG dump
    return httpx.post(process.url + "/v1/messages", content=content, timeout=30,
                      headers={"content-type": "application/json"})


def test_provider_and_client_text_cannot_add_log_lines(forging):
    process, first, second = forging
    already = len(summaries(message_lines(list(process.log_lines))))
    first.default = overloaded(EVIL)
    second.then(answer_with_stop_reason(f"end_turn\n{FORGED}\x1b[0m"),
                Status(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": EVIL + "x" * 5000}}))
    model = f"claude-sonnet-4\n{FORGED}\r\x1b[31m"
    assert post(process, model, pretty=True).status_code == 200
    relayed = post(process, model)
    assert relayed.status_code == 400
    message = relayed.json()["error"]["message"]
    assert message.startswith("it broke\nreq deadbeef") and len(message) <= MAX_MESSAGE_CHARS
    assert KEY not in relayed.text

    wait_until(lambda: len(summaries(message_lines(list(process.log_lines)))) >= already + 2,
               what="both request lines")
    lines = message_lines(list(process.log_lines))
    assert len(summaries(lines)) == already + 2
    assert not [line for line in lines if line.startswith("req deadbeef")]
    assert not [line for line in lines if RAW_CONTROL.search(line)]
    first_line, second_line = summaries(lines)[-2:]
    # The text is there, visibly escaped, in the one line of its request.
    assert "-> second/claude-sonnet-4\\nreq deadbeef" in first_line and "\\x1b[31m" in first_line
    assert "end_turn\\nreq deadbeef" in first_line
    assert "first HTTP 529 overloaded_error: it broke\\nreq deadbeef" in second_line
    debug = [line for line in lines if " sent to POST " in line]
    assert debug and all(REQUEST_LINE.match(line) for line in debug)
    assert '{\\n  \\"model\\"' in "\n".join(debug) or '{\\n  "model"' in "\n".join(debug)
    assert KEY not in process.log

    log_file = process.workdir / "balancer.jsonl"
    wait_until(lambda: log_file.read_text().count('"request": {') >= already + 2, what="the JSON lines")
    text = log_file.read_text()
    assert not RAW_CONTROL.search(text) and KEY not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert entries[-1]["request"]["attempts"][0]["outcome"].startswith("HTTP 529 overloaded_error: it broke\nreq")


NASTY = st.sampled_from(["\n", "\r", "\r\n", "\x1b[31m", "\x1b]0;title\x07", "\x00", "\x7f", "\x85", "\x9b",
                         "\u2028", "\u2029", "\u202e", "\t", "\\n", FORGED])
TEXT = st.lists(st.one_of(NASTY, st.text(st.characters(exclude_categories=("Cs",)), max_size=12)),
                max_size=6).map("".join)


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(error_text=TEXT, model=TEXT.filter(bool), stop_reason=TEXT)
def test_random_provider_and_client_text_is_one_log_line(forging, error_text, model, stop_reason):
    process, first, second = forging
    first.default = overloaded(error_text)
    second.default = answer_with_stop_reason(stop_reason or "end_turn")
    start = len(process.log_lines)
    assert post(process, model).status_code == 200
    marker = f"marker-{time.monotonic_ns()}"
    assert post(process, marker).status_code == 200
    # Each request logs a DEBUG line (what was sent) and its summary; the client can have its answer before they
    # are written, so wait for all four, then look at them by request id, whatever their order.
    wait_until(lambda: len(summaries(message_lines(process.log_lines[start:]))) >= 2, what="both summary lines")
    lines = message_lines(process.log_lines[start:])
    assert all(REQUEST_LINE.match(line) for line in lines), lines  # nothing raw, no forged or broken-off line
    by_id: dict[str, list[str]] = {}
    for line in lines:
        by_id.setdefault(REQUEST_LINE.match(line).group(1), []).append(line)
    assert len(by_id) == 2, lines
    for own in by_id.values():
        assert len(own) == 2 and len(summaries(own)) == 1, own
        assert any(" sent to POST " in line for line in own), own
    assert sum(marker in line for line in lines) >= 1
    assert not [line for line in process.log_lines[start:] if RAW_CONTROL.search(line)]
