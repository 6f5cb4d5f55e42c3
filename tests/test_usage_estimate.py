"""The usage watch's estimate of output tokens for a stream that ends without its final usage (the client left,
the provider broke off): characters of the content deltas / 4, rounded up, never below what was reported and
never added to it; and when the answer's content is over (`answered`), whatever its stop reason says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from addon.anthropic_events import Event
from addon.usage_watch import UsageWatch, delta_chars, estimated_tokens
from helpers import anthropic_message, anthropic_stream_events, sse


def events(pieces: list[str]) -> list[Event]:
    return [Event.received(sse(name, data)) for name, data in anthropic_stream_events("m", pieces)]


def shown(watch: UsageWatch, stream: list[Event]) -> UsageWatch:
    for event in stream:
        if event.name in watch.names:
            watch.see(event)
    return watch


def delta(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": kind, **fields}}


@pytest.mark.parametrize(("chars", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (2001, 501)])
def test_estimated_tokens_are_characters_over_four_rounded_up(chars: int, tokens: int) -> None:
    assert estimated_tokens(chars) == tokens


def test_delta_chars_count_text_thinking_and_tool_input_only() -> None:
    assert delta_chars(delta("text_delta", text="héllo")) == 5
    assert delta_chars(delta("thinking_delta", thinking="abc")) == 3
    assert delta_chars(delta("input_json_delta", partial_json='{"a": 1')) == 7
    assert delta_chars(delta("signature_delta", signature="x" * 400)) == 0  # opaque, not written output
    assert delta_chars(delta("citations_delta", citation={"cited_text": "abc"})) == 0
    assert delta_chars({"type": "content_block_delta", "delta": "odd"}) == 0
    assert delta_chars(delta("text_delta", text=12)) == 0


def test_a_stream_cut_before_message_delta_is_charged_the_estimate() -> None:
    stream = events(["word " * 80, "word " * 80])  # 800 characters of text
    cut = [e for e in stream if e.name not in ("content_block_stop", "message_delta", "message_stop")]
    watch = shown(UsageWatch(True, shown_events=True), cut)
    assert watch.usage["output_tokens"] == 1  # message_start's, until the stream is over
    watch.finish()
    assert (watch.usage["input_tokens"], watch.usage["output_tokens"]) == (12, 200)
    assert watch.estimated
    watch.finish()  # the flow's end may settle it again: the estimate replaces, it never adds
    assert watch.usage["output_tokens"] == 200


def test_a_whole_stream_is_charged_what_it_reported_even_below_the_estimate() -> None:
    watch = shown(UsageWatch(True, shown_events=True), events(["word " * 160]))  # message_delta says 1
    watch.finish()
    assert watch.usage["output_tokens"] == 1
    assert not watch.estimated


def test_a_higher_reported_count_stays_when_the_stream_is_cut() -> None:
    stream = events(["abcd"])
    stream[0] = Event.received(sse("message_start", {"type": "message_start", "message": {
        **anthropic_message("m", ""), "usage": {"input_tokens": 3, "output_tokens": 50}}}))
    watch = shown(UsageWatch(True, shown_events=True), stream[:4])
    watch.finish()
    assert watch.usage["output_tokens"] == 50
    assert not watch.estimated


def test_a_message_delta_without_output_tokens_is_no_final_usage() -> None:
    stream = events(["x" * 40])
    stream[-2] = Event.received(sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}))
    watch = shown(UsageWatch(True, shown_events=True), stream)
    watch.finish()
    assert (watch.usage["output_tokens"], watch.estimated) == (10, True)


def test_the_byte_reading_watch_counts_the_content_too() -> None:
    stream = events(["y" * 41])
    watch = UsageWatch(True)
    for event in stream[:4]:
        watch.observe(event.raw)
    watch.finish()
    assert (watch.usage["output_tokens"], watch.estimated) == (11, True)


def test_a_whole_message_is_never_estimated() -> None:
    watch = UsageWatch(False)
    watch.observe(json.dumps({**anthropic_message("m", "z" * 400), "usage": {"input_tokens": 1, "output_tokens": 2}})
                  .encode())
    watch.finish()
    assert (watch.usage["output_tokens"], watch.estimated) == (2, False)


@pytest.mark.parametrize("last", ["message_delta", "message_stop"])
def test_answered_at_message_delta_or_message_stop_whatever_the_stop_reason(last: str) -> None:
    stream = events(["Hello"])
    stream[-2] = Event.received(sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": None},
                                                      "usage": {"output_tokens": 1}}))
    watch = shown(UsageWatch(True, shown_events=True), stream[:-2])
    assert not watch.answered
    shown(watch, [e for e in stream if e.name == last])
    assert watch.answered
    assert watch.stop_reason is None
