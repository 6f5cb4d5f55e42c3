"""Broken answers through the real mitmdump: a 200 that is not a message, or a stream with events a client cannot
parse, fails over while nothing reached the client; after the commit point the client gets whole valid events,
then one well-formed `event: error` with a bounded, redacted message; the log, the flow and /providers record
the failure with its class."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest
from mitmproxy import io

from balancer_proc import BalancerProcess
from fakes import FakeProvider, Message, Raw, RawStream, Status, python_traceback
from helpers import (
    FIRST_DELTA,
    anthropic_message,
    anthropic_provider,
    error_event,
    openai_provider,
    openai_sse,
    raw_event,
    stream_events,
    wait_until,
)

MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": MESSAGES}
OPENING = stream_events()[:FIRST_DELTA]  # message_start, content_block_start, ping
COMMITTED = stream_events(pieces=["partial"])[: FIRST_DELTA + 1]  # ... and the first content delta
LATER = stream_events(pieces=["partial", "more"])[FIRST_DELTA + 1 :]  # the rest of a good stream
MARKER = "NEVER-FOR-THE-CLIENT"


def two(balancer, unique: str, bad: FakeProvider, good: FakeProvider, **settings: Any) -> tuple[str, str]:
    names = f"a-{unique}", f"b-{unique}"
    balancer.use([anthropic_provider(names[0], bad.url), anthropic_provider(names[1], good.url)], **settings)
    return names


def request_line(balancer, provider: str) -> str:
    lines = [line for line in balancer.log_lines if " | attempts: " in line and f"{provider} " in line]
    assert lines, f"no request line names {provider}"
    return lines[-1]


def streamed_until_error(client: anthropic.Anthropic) -> tuple[list[str], anthropic.APIStatusError]:
    """The text deltas the SDK's accumulator got, and the error that ended the stream."""
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream,
    ):
        for event in stream:
            if event.type == "content_block_delta":
                texts.append(event.delta.text)
    return texts, caught.value


# -- point 4: a 200 that is not a complete message fails over ----------------------------------------------------

COMPLETE = json.dumps(anthropic_message("claude-sonnet-4", "from a")).encode()


@pytest.mark.parametrize(
    ("behavior", "kind", "words"),
    [
        (lambda: Status(200, COMPLETE[:-25]), "stream_error", "not valid JSON"),
        (lambda: Raw(b"<html>upstream timed out</html>", content_type="text/html"), "stream_error", "not valid JSON"),
        (lambda: Status(200, {"id": "x", "content": "from a"}), "stream_error", "not a complete message"),
        (lambda: Status(200, {**json.loads(COMPLETE), "content": [{"type": "text"}]}), "stream_error",
         "content[0] (text)"),
        (lambda: Status(200, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
         "overloaded", "error in a 200 answer: overloaded_error: busy"),
    ],
    ids=["truncated-json", "not-json", "wrong-shape", "wrong-block", "error-in-200"],
)
def test_a_200_that_is_not_a_complete_message_fails_over(balancer, client, unique, behavior, kind, words):
    with FakeProvider(behavior()) as bad, FakeProvider(Message("from b")) as good:
        a, b = two(balancer, unique, bad, good)
        raw = client.messages.with_raw_response.create(**BODY)
        assert raw.headers["x-balancer-provider"] == b
        assert raw.parse().content[0].text == "from b"
        health = balancer.provider_status(a)
        assert health["failures_by_class"] == {kind: 1}
        assert words in health["last_error"]
        assert words in request_line(balancer, a)


def test_a_message_with_unknown_fields_and_blocks_passes_untouched(balancer, unique):
    message = {**anthropic_message("claude-sonnet-4", "hi"), "container": {"id": "c_1", "expires_at": "later"},
               "usage": {"input_tokens": 3, "output_tokens": 1, "server_tool_use": {"web_search_requests": 1}}}
    message["content"].append({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []})
    with FakeProvider(Status(200, message)) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)])
        response = httpx.post(balancer.url + "/v1/messages", json=BODY, timeout=30)
    assert response.status_code == 200
    assert response.json() == message


def test_count_tokens_and_other_api_answers_are_not_messages(balancer, client, unique):
    with FakeProvider(Status(200, {"data": [{"id": "file_1"}], "has_more": False})) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)], count_tokens="upstream")
        response = httpx.get(balancer.url + "/v1/files", timeout=30)
        assert response.json() == {"data": [{"id": "file_1"}], "has_more": False}
        fake.default = Message()  # answers count_tokens with {"input_tokens": 42}
        assert client.messages.count_tokens(model="claude-sonnet-4", messages=MESSAGES).input_tokens == 42
        assert balancer.provider_status(f"a-{unique}")["failures"] == 0


# -- point 4: a stream whose opening a client cannot parse fails over --------------------------------------------

@pytest.mark.parametrize(
    "events",
    [
        [raw_event("message_start", '{"type": "message_start", "message": {"id": "m'), *OPENING[1:]],
        [*OPENING[:1], raw_event("content_block_start", '{"type": "content_block_start", "index": 0, "con'),
         *OPENING[2:]],
        [*OPENING, raw_event("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": {')],
        [*OPENING, raw_event("content_block_delta", "[1, 2]")],
    ],
    ids=["truncated-message-start", "truncated-block-start", "truncated-first-delta", "list-first-delta"],
)
def test_a_stream_with_invalid_events_before_content_fails_over(balancer, client, unique, events):
    with FakeProvider(RawStream([*events, *LATER])) as bad, FakeProvider() as good:
        a, b = two(balancer, unique, bad, good)
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream:
            final = stream.get_final_message()
            assert stream.response.headers["x-balancer-provider"] == b
        assert final.content[0].text == "Hello"
        health = balancer.provider_status(a)
        assert health["failures_by_class"] == {"stream_error": 1}
        assert "invalid event before content" in health["last_error"]


def test_pings_that_are_not_json_are_replaced_not_failed_over(balancer, client, unique):
    """Clients skip pings without reading them: a provider whose pings are plain text still serves."""
    ping = raw_event("ping", MARKER)
    events = stream_events(pieces=["one", "two"])
    with FakeProvider(RawStream([ping, *events[:4], ping, *events[4:]])) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)])
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream:
            assert stream.get_final_message().content[0].text == "onetwo"
        body = httpx.post(balancer.url + "/v1/messages", json={**BODY, "stream": True}, timeout=30).content
        assert MARKER.encode() not in body and body.count(b'event: ping\ndata: {"type": "ping"}\n\n') == 3
        assert balancer.provider_status(f"a-{unique}")["failures"] == 0


# -- point 4: after the commit point, invalid events never reach the client --------------------------------------

@pytest.mark.parametrize(
    "invalid",
    [
        raw_event("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": {"text": "' + MARKER),
        raw_event("content_block_delta", MARKER),
        raw_event("content_block_delta", json.dumps([MARKER])),
    ],
    ids=["truncated-json", "not-json", "not-an-object"],
)
def test_an_invalid_event_after_content_ends_the_stream_with_an_error(balancer, client, unique, invalid):
    with FakeProvider(RawStream([*COMMITTED, invalid, *LATER])) as bad, FakeProvider() as good:
        a, _ = two(balancer, unique, bad, good)
        texts, error = streamed_until_error(client)
        assert texts == ["partial"]
        assert error.body["error"]["type"] == "api_error"
        assert "invalid event mid-stream" in error.body["error"]["message"]
        assert good.requests == []
        wait_until(lambda: balancer.provider_status(a)["failures_by_class"] == {"stream_error": 1},
                   what="the failure to count")

        bad.default = RawStream([*COMMITTED, invalid, *LATER])
        balancer.use([anthropic_provider(f"c-{unique}", bad.url)])  # the same provider, not cooling down
        body = httpx.post(balancer.url + "/v1/messages", json={**BODY, "stream": True}, timeout=30).content
        assert MARKER.encode() not in body
        assert body.endswith(b"\n\n") and body.rsplit(b"\n\n", 2)[-2].startswith(b"event: error\n")


def test_a_stream_cut_inside_an_event_ends_with_a_well_formed_error(balancer, client, unique):
    cut = stream_events(pieces=["partial", "more"])[FIRST_DELTA + 1][:30]
    with FakeProvider(RawStream([*COMMITTED, cut], ending="drop")) as bad, FakeProvider() as good:
        two(balancer, unique, bad, good)
        texts, error = streamed_until_error(client)
    assert texts == ["partial"]
    assert "broke off" in error.body["error"]["message"]


def test_nothing_after_message_stop_reaches_the_client(balancer, client, unique):
    events = [*stream_events(pieces=["whole"]), raw_event("content_block_delta", MARKER)]
    with FakeProvider(RawStream(events)) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)])
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream:
            assert stream.get_final_message().content[0].text == "whole"
        body = httpx.post(balancer.url + "/v1/messages", json={**BODY, "stream": True}, timeout=30).content
        assert MARKER.encode() not in body
        assert balancer.provider_status(f"a-{unique}")["failures"] == 0


# -- point 5: the provider's error after the commit point, bounded and redacted ----------------------------------

KEY = "sk-ant-api03-EchoedProviderKey-0123456789abcdef"
CLEANED = "ValueError: invalid x-api-key [redacted] for [path]"


def openai_chunk(content: str) -> bytes:
    return openai_sse({"id": "c1", "choices": [{"index": 0, "delta": {"content": content}}]})


def openai_error(message: str) -> bytes:
    return openai_sse({"error": {"message": message, "type": "server_error"}})


@pytest.mark.parametrize("provider_type", ["anthropic", "openai"])
def test_a_provider_traceback_mid_stream_reaches_the_client_bounded_and_redacted(
    balancer, client, unique, provider_type
):
    traceback = python_traceback(KEY)
    if provider_type == "anthropic":
        behavior: Any = RawStream([*COMMITTED, error_event("api_error", traceback)])
        config = anthropic_provider(f"a-{unique}", "")
    else:
        behavior = Raw(openai_chunk("partial") + openai_error(traceback) + b"data: [DONE]\n\n")
        config = openai_provider(f"a-{unique}", "")
    with FakeProvider(behavior) as fake:
        config["base_url"] = fake.url + ("/v1" if provider_type == "openai" else "")
        balancer.use([{**config, "auth_value": KEY}])
        texts, error = streamed_until_error(client)
        assert texts == ["partial"]
        assert error.body == {"type": "error", "error": {"type": "api_error", "message": CLEANED}}

        fake.default = behavior
        body = httpx.post(balancer.url + "/v1/messages", json={**BODY, "stream": True}, timeout=30).text
        health = httpx.get(balancer.url + "/providers", timeout=10).text
        wait_until(lambda: any(CLEANED in line for line in balancer.log_lines), what="the request line")
        for text in (body, health, "\n".join(balancer.log_lines)):
            assert KEY not in text and KEY[-12:] not in text
            assert "/srv/gateway" not in text and "site-packages" not in text
        assert len(body) < 2_000


# -- point 5: a failure after the commit point is recorded as one ------------------------------------------------

def test_a_stream_that_failed_after_commit_is_a_failed_attempt_in_the_log_and_the_flow(tmp_path):
    flows_file, log_file = tmp_path / "flows.mitm", tmp_path / "balancer.jsonl"
    behaviors = [RawStream([*COMMITTED, error_event()]),
                 Raw(openai_chunk("partial") + openai_error("The engine is overloaded"))]
    with FakeProvider(behaviors[0]) as anthropic_fake, FakeProvider(behaviors[1]) as openai_fake:
        balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file)))
        balancer.write_providers([anthropic_provider("a", anthropic_fake.url), openai_provider("o", openai_fake.url)],
                                 log_file=str(log_file), failure_cooldown=600)
        with balancer, anthropic.Anthropic(base_url=balancer.url, api_key="k", max_retries=0) as client:
            for _ in behaviors:  # a fails and cools down, so the second request goes to o
                texts, error = streamed_until_error(client)
                assert texts == ["partial"] and error.body["error"]["type"] == "overloaded_error"
            wait_until(lambda: len([line for line in balancer.log_lines if " | attempts: " in line]) == 2,
                       what="both request lines")
            lines = [line for line in balancer.log_lines if " | attempts: " in line]

    assert len(lines) == 2
    assert " -> a/claude-sonnet-4 stream failed mid-stream | attempts: a 200, then overloaded: error event " \
           "mid-stream: overloaded_error: Overloaded " in lines[0]
    assert " -> o/gpt-big stream failed mid-stream | attempts: o 200, then overloaded: error mid-stream: " \
           "overloaded_error: The engine is overloaded " in lines[1]

    with flows_file.open("rb") as f:
        flows = [flow for flow in io.FlowReader(f).stream() if flow.metadata.get("balancer", {}).get("kind")]
    logged = [json.loads(line)["request"] for line in log_file.read_text().splitlines() if '"request"' in line]
    for record in (*(flow.metadata["balancer"] for flow in flows), *logged):
        assert record["status"] == "failed mid-stream"
        (attempt,) = record["attempts"]
        assert attempt["failed"] is True and attempt["class"] == "overloaded" and attempt["after_commit"] is True
        assert attempt["outcome"].startswith("200, then overloaded: error ")
    assert [flow.comment.split(", then failed: ")[0] for flow in flows] == ["served by a", "served by o"]
    assert all(", then failed: error " in flow.comment for flow in flows)
