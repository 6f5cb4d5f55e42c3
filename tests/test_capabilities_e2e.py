"""What the balancer learns about providers, through the real mitmdump and the official SDK: a provider that refuses
part of a request by name gets it once more without it, and later requests are built without it (issue 13, points
1-3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from mitmproxy import io

from addon.attempt_marker import ATTEMPT
from balancer_proc import BalancerProcess
from fakes import FakeProvider, Message, Status
from helpers import anthropic_provider, openai_provider, wait_until
from strict_fakes import OWN_SIGNATURE, RefusesParameters, StrictRelay, anthropic_refusal

CLAUDE_CODE_BETAS = ("claude-code-20250219", "interleaved-thinking-2025-05-14", "context-management-2025-06-27",
                     "mid-conversation-system-2026-04-07", "effort-2025-11-24")
REMINDER = {"type": "text", "text": "<system-reminder>be brief</system-reminder>",
            "cache_control": {"type": "ephemeral"}}
SIGNED_ELSEWHERE = {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCkgIBxABGAIiQL-elsewhere"}
CONVERSATION: list[Any] = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": [SIGNED_ELSEWHERE, {"type": "text", "text": "Hello! What now?"}]},
    {"role": "system", "content": [REMINDER]},
    {"role": "user", "content": "Say hello."},
]


def claude_code_request(client: anthropic.Anthropic, messages: list[Any] | None = None) -> str:
    """A streamed request shaped as Claude Code sends it (adaptive thinking, effort, context management, its beta
    flags, a mid-conversation system message), read with the SDK's stream accumulator."""
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=32000, messages=messages or [{"role": "user", "content": "Hi"}],
        system=[{"type": "text", "text": "You are Claude Code."}],
        metadata={"user_id": json.dumps({"device_id": "d", "session_id": "s"})},
        extra_headers={"anthropic-beta": ",".join(CLAUDE_CODE_BETAS)},
        extra_body={"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
                    "context_management": {"edits": [{"type": "clear_thinking_20251015"}]}},
    ) as stream:
        return stream.get_final_text()


def log_line_of(balancer: BalancerProcess, provider: str) -> str:
    lines: list[str] = []

    def logged() -> bool:
        lines[:] = [line for line in balancer.log_lines if " -> " in line and f"attempts: {provider} " in line]
        return bool(lines)

    wait_until(logged, what=f"a request line for {provider}")
    return lines[-1]


# -- 1. OpenAI-type providers ------------------------------------------------------------------------------------

def test_litellm_refusing_reasoning_effort_serves_claude_codes_first_request_and_later_ones_go_without(
    balancer, client, unique
):
    name = f"litellm-{unique}"
    with FakeProvider(RefusesParameters(("reasoning_effort",), server="litellm")) as fake:
        balancer.use([openai_provider(name, fake.url)])
        assert claude_code_request(client) == "Hello"
        assert ["reasoning_effort" in r.json() for r in fake.requests] == [True, False]
        assert "attempts: " + name + " HTTP 400, retried without reasoning_effort" in log_line_of(balancer, name)

        assert claude_code_request(client) == "Hello"
        assert len(fake.requests) == 3 and "reasoning_effort" not in fake.requests[2].json()
    assert balancer.provider_status(name)["learned"] == {"gpt-big": ["without reasoning_effort"]}
    assert balancer.provider_status(name)["failures"] == 0  # a refusal it can be served without is no failure
    assert sum(f"{name} (model gpt-big) refused part of a request" in line for line in balancer.log_lines) == 1


@pytest.mark.parametrize(("server", "refused", "sent_instead"), [
    ("vllm", "stream_options", None),
    ("openai", "max_tokens", "max_completion_tokens"),
    ("litellm", "parallel_tool_calls", None),
])
def test_each_servers_wording_of_a_refused_parameter_is_understood(balancer, client, unique, server, refused,
                                                                   sent_instead):
    name = f"{server}-{unique}"
    with FakeProvider(RefusesParameters((refused,), server=server)) as fake:
        balancer.use([openai_provider(name, fake.url)])
        with client.messages.stream(model="claude-sonnet-4", max_tokens=64,
                                    messages=[{"role": "user", "content": "Hi"}],
                                    tools=[{"name": "Read", "input_schema": {"type": "object"}}],
                                    tool_choice={"type": "auto", "disable_parallel_tool_use": True}) as stream:
            assert stream.get_final_text() == "Hello"
        first, second = (r.json() for r in fake.requests)
    assert refused in first and refused not in second
    if sent_instead:
        assert second[sent_instead] == first[refused]
    assert balancer.provider_status(name)["learned"] != {}


def test_when_the_retry_is_refused_too_the_client_gets_that_refusal_and_what_was_cured_is_learned(
    balancer, client, unique,
):
    name = f"strict-{unique}"
    # OpenAI's wording names one parameter per answer: the retry is refused for the next one.
    with FakeProvider(RefusesParameters(("reasoning_effort", "user"), server="openai")) as fake:
        balancer.use([openai_provider(name, fake.url)])
        with pytest.raises(anthropic.BadRequestError) as refused:
            claude_code_request(client)
        assert "Unsupported parameter: 'user'" in str(refused.value)
        assert len(fake.requests) == 2  # one retry, never more
        line = log_line_of(balancer, name)
        assert f"{name} HTTP 400, retried without reasoning_effort" in line and f"{name} 400 " in line
        # Leaving out reasoning_effort cured its refusal (the next one named something else); `user` is unproven.
        assert balancer.provider_status(name)["learned"] == {"gpt-big": ["without reasoning_effort"]}

        assert claude_code_request(client) == "Hello"  # refused for `user` only, and retried without it
        assert len(fake.requests) == 4
        assert claude_code_request(client) == "Hello"  # now without both, at once
        assert len(fake.requests) == 5
    assert balancer.provider_status(name)["learned"] == {"gpt-big": ["without reasoning_effort", "without user"]}


def test_a_fix_that_did_not_cure_the_refusal_is_not_learned(balancer, client, unique):
    name = f"echo-{unique}"
    # A server that answers every request with the same refusal (say, one that echoes the client's text): leaving
    # the parameter out does not help, so nothing is remembered for the other clients.
    refusal = {"error": {"message": "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                         "type": "invalid_request_error", "param": "reasoning_effort",
                         "code": "unsupported_parameter"}}
    with FakeProvider(Status(400, refusal)) as fake:
        balancer.use([openai_provider(name, fake.url)])
        with pytest.raises(anthropic.BadRequestError):
            claude_code_request(client)
        assert len(fake.requests) == 2
        assert "reasoning_effort" in fake.requests[0].json() and "reasoning_effort" not in fake.requests[1].json()
    assert balancer.provider_status(name)["learned"] == {}


def test_an_openai_error_naming_nothing_the_balancer_added_is_returned_without_a_retry(balancer, client, unique):
    name = f"plain-{unique}"
    overflow = {"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages "
                          "resulted in 9000 tokens.", "type": "invalid_request_error", "param": "messages",
                          "code": "context_length_exceeded"}}
    with FakeProvider(Status(400, overflow)) as fake:
        balancer.use([openai_provider(name, fake.url)])
        with pytest.raises(anthropic.BadRequestError) as refused:
            claude_code_request(client)
        assert len(fake.requests) == 1
    assert "prompt is too long" in str(refused.value)
    assert balancer.provider_status(name)["learned"] == {}


def test_what_was_learned_survives_a_reload_of_an_unchanged_provider_and_not_a_changed_one(balancer, client, unique):
    name = f"kept-{unique}"
    with FakeProvider(RefusesParameters(("reasoning_effort",))) as fake:
        entry = openai_provider(name, fake.url)
        balancer.use([entry])
        claude_code_request(client)
        balancer.use([entry, anthropic_provider(f"other-{unique}", "http://127.0.0.1:9", priority=5)])
        assert balancer.provider_status(name)["learned"] == {"gpt-big": ["without reasoning_effort"]}
        claude_code_request(client)
        assert len(fake.requests) == 3  # no refusal after the reload

        balancer.use([{**entry, "base_url": fake.url + "/elsewhere/v1"}])  # another server behind the name
        assert balancer.provider_status(name)["learned"] == {}
        claude_code_request(client)
        assert len(fake.requests) == 5  # refused and retried again


# -- 2. Anthropic-type relays --------------------------------------------------------------------------------------

def betas_of(request: Any) -> list[str]:
    return [v for v in request.headers.get("anthropic-beta", "").split(",") if v]


def test_a_relay_refusing_a_beta_value_gets_the_request_without_it_and_later_ones_too(balancer, client, unique):
    name = f"relay-{unique}"
    refused = "context-management-2025-06-27"
    with FakeProvider(StrictRelay(betas_refused=frozenset({refused}))) as fake:
        balancer.use([anthropic_provider(name, fake.url)])
        assert claude_code_request(client) == "Hello"
        assert [refused in betas_of(r) for r in fake.requests] == [True, False]
        assert betas_of(fake.requests[1]) == [b for b in CLAUDE_CODE_BETAS if b != refused]
        assert fake.requests[1].json() == fake.requests[0].json()  # only the header changed

        assert claude_code_request(client) == "Hello"
        assert len(fake.requests) == 3 and refused not in betas_of(fake.requests[2])
    learned = balancer.provider_status(name)["learned"]
    assert learned == {"claude-sonnet-4-5": [f"without beta {refused}"]}


def test_a_relay_refusing_a_body_field_gets_the_request_without_it(balancer, client, unique):
    name = f"relay-{unique}"
    with FakeProvider(StrictRelay(fields_refused=frozenset({"context_management"}))) as fake:
        balancer.use([anthropic_provider(name, fake.url)])
        assert claude_code_request(client) == "Hello"
        first, second = (r.json() for r in fake.requests)
        assert "context_management" in first
        assert second == {k: v for k, v in first.items() if k != "context_management"}
        claude_code_request(client)
        assert "context_management" not in fake.requests[2].json()
        assert len(fake.requests) == 3
    assert balancer.provider_status(name)["learned"] == {"claude-sonnet-4-5": ["without context_management"]}


def test_a_relay_refusing_system_messages_gets_them_as_user_text(balancer, client, unique):
    name = f"relay-{unique}"
    conversation = [m for m in CONVERSATION if m["role"] != "assistant"]  # no thinking: only the roles matter here
    with FakeProvider(StrictRelay(refuses_system=True)) as fake:
        balancer.use([anthropic_provider(name, fake.url)])
        assert claude_code_request(client, conversation) == "Hello"
        messages = fake.requests[1].json()["messages"]
    assert [m["role"] for m in messages] == ["user"]
    assert messages[0]["content"] == [{"type": "text", "text": "Hi"}, REMINDER, {"type": "text", "text": "Say hello."}]
    assert balancer.provider_status(name)["learned"] == {
        "claude-sonnet-4-5": ["with mid-conversation system messages as user text"]}


CLIENT_ERRORS = [
    "prompt is too long: 215000 tokens > 200000 maximum",
    'messages: roles must alternate between "user" and "assistant", but found multiple "user" roles in a row',
    "There was an error parsing the body: Expecting ',' delimiter: line 1 column 2 (char 1)",
    "tools.0.custom.input_schema: JSON schema is invalid. It must match JSON Schema draft 2020-12",
]


@pytest.mark.parametrize("message", CLIENT_ERRORS, ids=["prompt too long", "alternation", "invalid JSON",
                                                        "bad tool schema"])
def test_a_genuine_client_error_from_a_relay_is_returned_unchanged_and_never_retried(balancer, client, unique,
                                                                                     message):
    name = f"relay-{unique}"
    with FakeProvider(Status(400, anthropic_refusal(message))) as fake:
        balancer.use([anthropic_provider(name, fake.url)])
        with pytest.raises(anthropic.BadRequestError) as refused:
            claude_code_request(client, CONVERSATION)
        assert len(fake.requests) == 1
    assert refused.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    assert balancer.provider_status(name)["learned"] == {}


def test_one_clients_bad_value_is_returned_to_it_and_changes_no_other_request(balancer, client, unique):
    name = f"anthropic-{unique}"
    with FakeProvider(StrictRelay(efforts=("low", "medium", "high"))) as fake:
        balancer.use([anthropic_provider(name, fake.url)])
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(model="claude-sonnet-4-5", max_tokens=8,
                                   messages=[{"role": "user", "content": "Hi"}],
                                   extra_body={"output_config": {"effort": "extreme"}})
        assert len(fake.requests) == 1  # never retried
        wording = "output_config.effort: Input should be 'low', 'medium' or 'high'"
        assert refused.value.body == anthropic_refusal(wording)

        assert claude_code_request(client) == "Hello"  # the next client's valid effort goes as it was sent
        assert len(fake.requests) == 2 and fake.requests[1].json()["output_config"] == {"effort": "high"}
    assert balancer.provider_status(name)["learned"] == {}


def test_junk_fields_are_left_out_of_their_own_request_only_and_a_real_refusal_is_still_learned(
    balancer, client, unique
):
    name = f"relay-{unique}"
    junk = {f"junk_{i}": i for i in range(40)}
    relay = StrictRelay(fields_refused=frozenset(junk) | {"context_management"}, fastapi=True)
    with FakeProvider(relay) as fake:
        balancer.use([anthropic_provider(name, fake.url)])
        answer = client.messages.create(model="claude-sonnet-4-5", max_tokens=8,
                                        messages=[{"role": "user", "content": "Hi"}], extra_body=junk)
        assert answer.content[0].text == "Hello"  # type: ignore[union-attr]
        first, second = (r.json() for r in fake.requests)
        assert set(junk) <= set(first) and not set(junk) & set(second)
        assert balancer.provider_status(name)["learned"] == {}  # no field the balancer knows: nothing remembered

        # Claude Code's own request: its refused field is left out at once and remembered.
        assert claude_code_request(client) == "Hello"
        assert len(fake.requests) == 4 and "context_management" not in fake.requests[3].json()
        assert claude_code_request(client) == "Hello"
        assert len(fake.requests) == 5
    assert balancer.provider_status(name)["learned"] == {"claude-sonnet-4-5": ["without context_management"]}


# -- 3. Thinking signatures ----------------------------------------------------------------------------------------

def test_thinking_signed_elsewhere_is_stripped_once_for_this_request_and_not_remembered(balancer, client, unique):
    name = f"relay-{unique}"
    own = {"type": "thinking", "thinking": "Mine.", "signature": OWN_SIGNATURE + "abc"}
    with FakeProvider(StrictRelay(checks_signatures=True)) as fake:
        balancer.use([anthropic_provider(name, fake.url)])
        assert claude_code_request(client, CONVERSATION) == "Hello"
        first, second = (r.json()["messages"] for r in fake.requests)
        assert SIGNED_ELSEWHERE in first[1]["content"]
        assert second[1]["content"] == [{"type": "text", "text": "Hello! What now?"}]
        assert [m["role"] for m in second] == [m["role"] for m in first]  # only the thinking went

        # A conversation whose thinking this relay signed is sent as it is: nothing was learned.
        mine = [CONVERSATION[0], {"role": "assistant", "content": [own, {"type": "text", "text": "Hi"}]},
                CONVERSATION[3]]
        assert claude_code_request(client, mine) == "Hello"
        assert len(fake.requests) == 3 and own in fake.requests[2].json()["messages"][1]["content"]
        # and the next foreign signature is refused and stripped again, per conversation
        assert claude_code_request(client, CONVERSATION) == "Hello"
        assert len(fake.requests) == 5
    assert balancer.provider_status(name)["learned"] == {}


def test_a_signature_refusal_from_a_relay_that_is_not_about_thinking_is_left_alone(balancer, client, unique):
    name = f"relay-{unique}"
    with FakeProvider(Status(400, anthropic_refusal("invalid request signature header"))) as fake:
        balancer.use([anthropic_provider(name, fake.url)])
        with pytest.raises(anthropic.BadRequestError):
            claude_code_request(client, CONVERSATION)
        assert len(fake.requests) == 1


# -- both tries as attempt flows --------------------------------------------------------------------------------------

def test_both_tries_show_as_attempt_flows_with_what_each_sent_and_got(tmp_path: Path):
    flows_file = tmp_path / "flows.mitm"
    with FakeProvider(RefusesParameters(("reasoning_effort",))) as fake:
        balancer = BalancerProcess(tmp_path, extra_args=("-w", str(flows_file)))
        balancer.write_providers([openai_provider("lite", fake.url)])
        with balancer, anthropic.Anthropic(base_url=balancer.url, api_key="k", max_retries=0, timeout=30) as client:
            assert claude_code_request(client) == "Hello"
            log_line_of(balancer, "lite")
    with flows_file.open("rb") as f:
        flows = list(io.FlowReader(f).stream())
    attempts = sorted((f for f in flows if ATTEMPT in f.metadata), key=lambda f: f.metadata[ATTEMPT]["attempt"])
    assert [(f.metadata[ATTEMPT]["outcome"], f.response.status_code) for f in attempts] == [
        ("HTTP 400, retried without reasoning_effort", 400), ("200", 200)]
    assert "reasoning_effort" in json.loads(attempts[0].request.content)
    assert b"UnsupportedParamsError" in attempts[0].response.content
    assert "reasoning_effort" not in json.loads(attempts[1].request.content)
    assert [f.metadata[ATTEMPT]["served"] for f in attempts] == [False, True]


def test_a_provider_that_refuses_nothing_is_sent_claude_codes_request_once(balancer, client, unique):
    with FakeProvider(Message()) as fake:
        balancer.use([anthropic_provider(f"plain-{unique}", fake.url)])
        assert claude_code_request(client, CONVERSATION) == "Hello"
        assert len(fake.requests) == 1
        assert betas_of(fake.requests[0]) == list(CLAUDE_CODE_BETAS)
