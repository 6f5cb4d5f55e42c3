"""What an Anthropic-type provider receives, and what the client gets back, through the real mitmdump."""

from __future__ import annotations

import json
import threading

import anthropic
import httpx

from fakes import FakeProvider, Stream
from helpers import FIRST_DELTA, anthropic_provider, wait_until

MESSAGES = [{"role": "user", "content": "Hi there"}]


def test_request_reaches_first_provider_with_its_credential_and_mapped_model(balancer, fakes, client, unique):
    first, second, _ = fakes
    balancer.use([
        anthropic_provider(f"a-{unique}", first.url, big_model="provider-big", small_model="provider-small"),
        anthropic_provider(f"b-{unique}", second.url),
    ])
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=MESSAGES,
        system=[{"type": "text", "text": "Be brief", "cache_control": {"type": "ephemeral"}}],
        extra_headers={"anthropic-version": "2023-06-01",
                       "anthropic-beta": "interleaved-thinking-2025-05-14,some-future-flag", "x-custom": "kept"},
        extra_query={"beta": "true"},
        extra_body={"context_management": {"edits": []}, "unknown_future_field": {"x": 1}},
    )
    message = raw.parse()

    assert raw.headers["x-balancer-provider"] == f"a-{unique}"
    assert message.model == "claude-sonnet-4-6"  # the model the client asked for, not the provider's
    assert second.requests == []
    (received,) = first.requests
    assert received.path == "/v1/messages?beta=true"
    assert received.headers["x-api-key"] == f"key-of-a-{unique}"
    assert "authorization" not in received.headers
    assert "client-own-key" not in json.dumps(received.headers)
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14,some-future-flag"
    assert received.headers["x-custom"] == "kept"
    body = received.json()
    assert body["model"] == "provider-big"
    # Everything else arrives as the client sent it, unknown fields included.
    assert body["messages"] == MESSAGES
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["context_management"] == {"edits": []}
    assert body["unknown_future_field"] == {"x": 1}
    assert body["max_tokens"] == 64


def test_haiku_uses_small_model_and_unconfigured_tier_forwards_requested(balancer, fakes, client, unique):
    first = fakes[0]
    balancer.use([anthropic_provider(f"a-{unique}", first.url, small_model="provider-small")])
    client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=8, messages=MESSAGES)
    client.messages.create(model="claude-opus-4-1", max_tokens=8, messages=MESSAGES)
    assert [r.json()["model"] for r in first.requests] == ["provider-small", "claude-opus-4-1"]


def test_unknown_model_uses_big_model_and_logs_a_warning(balancer, fakes, client, unique):
    first = fakes[0]
    balancer.use([anthropic_provider(f"a-{unique}", first.url, big_model="provider-big")])
    message = client.messages.create(model="some-other-model", max_tokens=8, messages=MESSAGES)
    assert first.requests[0].json()["model"] == "provider-big"
    assert message.model == "some-other-model"
    wait_until(lambda: any("'some-other-model' matches no tier" in line for line in balancer.log_lines),
               what="the warning in the log")


def test_unchanged_model_forwards_the_body_byte_for_byte(balancer, fakes, unique):
    first = fakes[0]
    balancer.use([anthropic_provider(f"a-{unique}", first.url)])
    body = (b'{ "model": "claude-sonnet-4",  "max_tokens": 5, '
            b'"messages": [{"role":"user","content":"\\u00e9t\xc3\xa9"}] }')
    response = httpx.post(balancer.url + "/v1/messages", content=body,
                          headers={"content-type": "application/json", "x-api-key": "c"}, timeout=10)
    assert response.status_code == 200
    assert first.requests[0].body == body


def test_auth_token_and_passthrough_credentials(balancer, fakes, client, unique):
    token_fake, passthrough_fake, _ = fakes
    balancer.use([
        {**anthropic_provider(f"tok-{unique}", token_fake.url), "auth_type": "auth_token", "auth_value": "tok-secret"},
    ])
    client.messages.create(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES)
    received = token_fake.requests[0].headers
    assert received["authorization"] == "Bearer tok-secret"
    assert "x-api-key" not in received

    balancer.use([
        {"name": f"pass-{unique}", "base_url": passthrough_fake.url, "auth_type": "api_key",
         "auth_value": "passthrough"},
    ])
    # Whichever header the client used for its own credential is what the provider gets.
    for header, value in (("x-api-key", "client-key-1"), ("authorization", "Bearer client-token-2")):
        response = httpx.post(balancer.url + "/v1/messages", json={"model": "claude-sonnet-4", "max_tokens": 8,
                              "messages": MESSAGES}, headers={header: value}, timeout=10)
        assert response.status_code == 200
        assert passthrough_fake.requests[-1].headers[header] == value


def test_a_base_url_path_prefixes_the_request_path(balancer, fakes, client, unique):
    first = fakes[0]
    balancer.use([anthropic_provider(f"a-{unique}", first.url + "/api/anthropic/")])
    client.messages.create(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES)
    assert first.requests[0].path == "/api/anthropic/v1/messages"


def test_streaming_through_the_sdk_with_model_echo(balancer, fakes, client, unique):
    first = fakes[0]
    first.default = Stream(pieces=["Hello", ", ", "world"])
    balancer.use([anthropic_provider(f"a-{unique}", first.url, big_model="provider-big")])
    with client.messages.with_streaming_response.create(
        model="claude-sonnet-4", max_tokens=8, messages=MESSAGES, stream=True
    ) as raw:
        assert raw.headers["x-balancer-provider"] == f"a-{unique}"
        assert raw.headers["content-type"].startswith("text/event-stream")
    with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.model == "claude-sonnet-4"
    assert [block.text for block in final.content] == ["Hello, world"]
    assert final.stop_reason == "end_turn"
    assert first.requests[-1].json()["model"] == "provider-big"
    assert first.requests[-1].headers["accept-encoding"] == "identity"


def test_first_event_reaches_the_client_before_the_provider_finishes(balancer, client, unique):
    """The provider holds the rest of its stream until the client has seen the first content: a buffering
    balancer would deadlock here until the provider's gate times out."""
    gate = threading.Event()
    behavior = Stream(pieces=["first", "second"], gate=gate, gate_after=FIRST_DELTA + 1)
    with FakeProvider(default=behavior) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)])
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream:
            events = iter(stream)
            assert next(events).type == "message_start"
            deltas = (e for e in events if e.type == "content_block_delta")
            assert next(deltas).delta.text == "first"
            assert not behavior.finished.is_set()  # the provider is still in the middle of its stream
            gate.set()
            rest = "".join(e.delta.text for e in deltas)
        assert behavior.gate_timed_out is False
        assert rest == "second"


def test_count_tokens_goes_to_a_provider(balancer, fakes, client, unique):
    first = fakes[0]
    balancer.use([anthropic_provider(f"a-{unique}", first.url, big_model="provider-big")])
    count = client.messages.count_tokens(model="claude-sonnet-4", messages=MESSAGES)
    assert count.input_tokens == 42
    received = first.requests[0]
    assert received.path.startswith("/v1/messages/count_tokens")
    assert received.json()["model"] == "provider-big"


def test_other_api_paths_are_forwarded_to_the_provider(balancer, fakes, unique):
    first = fakes[0]
    balancer.use([anthropic_provider(f"a-{unique}", first.url)])
    response = httpx.get(balancer.url + "/v1/files?limit=5", headers={"x-api-key": "c"}, timeout=10)
    assert response.headers["x-balancer-provider"] == f"a-{unique}"
    assert first.requests[0].method == "GET"
    assert first.requests[0].path == "/v1/files?limit=5"
    assert first.requests[0].headers["x-api-key"] == f"key-of-a-{unique}"


def test_sdk_sees_provider_errors_unchanged(balancer, fakes, client, unique):
    """A 400 is the client's own problem: passed through as is, provider not penalised, no failover."""
    first, second, _ = fakes
    from fakes import Status

    too_long = {"type": "invalid_request_error", "message": "prompt is too long: 300000 tokens > 200000 maximum"}
    first.then(Status(400, {"type": "error", "error": too_long}))
    balancer.use([anthropic_provider(f"a-{unique}", first.url), anthropic_provider(f"b-{unique}", second.url)])
    try:
        client.messages.create(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES)
    except anthropic.BadRequestError as exc:
        assert exc.status_code == 400
        assert "prompt is too long" in exc.message
        assert exc.response.headers["x-balancer-provider"] == f"a-{unique}"
    else:
        raise AssertionError("the 400 did not reach the client")
    assert second.requests == []
    status = balancer.provider_status(f"a-{unique}")
    assert status["healthy"] is True and status["failures"] == 0


def test_non_ascii_headers_and_extra_headers_reach_the_provider(balancer, fakes, unique):
    first = fakes[0]
    balancer.use([anthropic_provider(f"a-{unique}", first.url, extra_headers={"x-title": "Café ☕", "x-org": "o1"})])
    response = httpx.post(balancer.url + "/v1/messages",
                          json={"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
                          headers={"x-client-note": "naïve".encode()}, timeout=10)
    assert response.status_code == 200
    received = first.requests[0].headers
    assert received["x-org"] == "o1"
    assert received["x-title"].encode("latin-1").decode("utf-8") == "Café ☕"
    assert received["x-client-note"].encode("latin-1").decode("utf-8") == "naïve"


def test_a_compressed_request_body_is_sent_decoded_and_labelled_so(balancer, fakes, unique):
    import gzip

    first = fakes[0]
    balancer.use([anthropic_provider(f"a-{unique}", first.url, big_model="mapped")])
    request = {"model": "claude-sonnet-4", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    body = gzip.compress(json.dumps(request).encode())
    response = httpx.post(balancer.url + "/v1/messages", content=body, timeout=10,
                          headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert response.status_code == 200
    assert "content-encoding" not in first.requests[0].headers
    assert first.requests[0].json()["model"] == "mapped"
