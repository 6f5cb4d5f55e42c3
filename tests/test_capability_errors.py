"""The recognisers of what a provider's 4xx refuses, tested directly with the wordings real servers use."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import strategies as st

from addon.capabilities import DROP, DROP_BETA, FOLD_SYSTEM, RENAME, STRIP_THINKING, Fix
from addon.capability_errors import (
    ANTHROPIC_ESSENTIAL,
    INLINE_BODY,
    OPENAI_DROPPABLE,
    SentRequest,
    anthropic_fixes,
    clauses,
    openai_fixes,
    recognised,
    sent_anthropic,
    sent_openai,
)
from fuzzing import quick_and_deep

# What the balancer sends an OpenAI-type provider for a Claude Code request with thinking on.
OPENAI_SENT = sent_openai({
    "model": "gpt-4o-mini", "messages": [], "max_tokens": 32000, "tools": [], "tool_choice": "auto", "user": "u",
    "reasoning_effort": "high", "stream": True, "stream_options": {"include_usage": True},
    "parallel_tool_calls": False, "temperature": 1,
})
BETAS = ("claude-code-20250219", "context-management-2025-06-27", "effort-2025-11-24",
         "interleaved-thinking-2025-05-14", "mid-conversation-system-2026-04-07")
SIGNED = {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "Eq0Ck..."},
                                           {"type": "text", "text": "Hi"}]}
CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True, "system": [{"type": "text", "text": "s"}],
    "tools": [], "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015"}]}, "metadata": {"user_id": "{}"},
    "messages": [{"role": "user", "content": "Hi"}, SIGNED,
                 {"role": "system", "content": [{"type": "text", "text": "reminder"}]},
                 {"role": "user", "content": "go on"}],
}
ANTHROPIC_SENT = sent_anthropic(CLAUDE_CODE_BODY, [("anthropic-beta", ",".join(BETAS))])


def openai_error(message: str, **fields: Any) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None,
                                 **fields}}).encode()


def anthropic_error(message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": message}}).encode()


LITELLM = (
    "litellm.UnsupportedParamsError: openai does not support parameters: {names}, for model=gpt-4o-mini. To drop "
    "these, set `litellm.drop_params=True` or for proxy:\n\n`litellm_settings:\n drop_params: true`\n. \n If you want"
    " to use these params dynamically send allowed_openai_params={names} in your request.. Received Model "
    "Group=gpt-4o-mini\nAvailable Model Group Fallbacks=None"
)


def litellm_body(names: str) -> bytes:
    return json.dumps({"error": {"message": LITELLM.format(names=names), "type": "None", "param": None,
                                 "code": "400"}}).encode()


OPENAI_CASES = [
    ("litellm, one parameter", 400, litellm_body("['reasoning_effort']"), {Fix(DROP, "reasoning_effort")}),
    ("litellm names thinking for the reasoning_effort it translated", 400, litellm_body("['thinking']"),
     {Fix(DROP, "reasoning_effort")}),
    ("litellm, two parameters", 400, litellm_body("['parallel_tool_calls', 'user']"),
     {Fix(DROP, "parallel_tool_calls"), Fix(DROP, "user")}),
    ("litellm, older dict form: keys, not values", 400,
     openai_error("litellm.UnsupportedParamsError: bedrock does not support parameters: {'reasoning_effort': "
                  "'high', 'user': 'abc'}, for model=anthropic.claude-3. To drop these, set "
                  "`litellm.drop_params=True`"),
     {Fix(DROP, "reasoning_effort"), Fix(DROP, "user")}),
    ("openai max_tokens -> max_completion_tokens", 400,
     openai_error("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                  "'max_completion_tokens' instead.", param="max_tokens", code="unsupported_parameter"),
     {Fix(RENAME, "max_tokens", "max_completion_tokens")}),
    ("openai reasoning_effort", 400,
     openai_error("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                  param="reasoning_effort", code="unsupported_parameter"),
     {Fix(DROP, "reasoning_effort")}),
    ("openai unsupported value, by its param and code", 400,
     openai_error("Unsupported value: 'temperature' does not support 1 with this model. Only the default (1) value "
                  "is supported.", param="temperature", code="unsupported_value"),
     {Fix(DROP, "temperature")}),
    ("azure unrecognized argument", 400, openai_error("Unrecognized request argument supplied: stream_options"),
     {Fix(DROP, "stream_options")}),
    ("vllm: pydantic's errors as Python's repr in the message", 400,
     json.dumps({"object": "error", "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'parallel_tool_calls'), "
                 "'msg': 'Extra inputs are not permitted', 'input': False}]", "type": "BadRequestError",
                 "param": None, "code": 400}).encode(),
     {Fix(DROP, "parallel_tool_calls")}),
    ("vllm: tool_choice form not supported", 400,
     json.dumps({"object": "error", "message": 'tool_choice = "required" is not supported!',
                 "type": "BadRequestError", "param": None, "code": 400}).encode(),
     {Fix(DROP, "tool_choice")}),
    ("fastapi 422 detail list", 422,
     json.dumps({"detail": [{"type": "extra_forbidden", "loc": ["body", "stream_options"],
                             "msg": "Extra inputs are not permitted", "input": {"include_usage": True}}]}).encode(),
     {Fix(DROP, "stream_options")}),
    ("mistral: the detail list inside the message", 422,
     json.dumps({"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "user"],
                                                            "msg": "Extra inputs are not permitted", "input": "u"}]},
                 "type": "invalid_request_message_error", "param": None, "code": None}).encode(),
     {Fix(DROP, "user")}),
    ("openrouter: the upstream error nested as JSON text in metadata.raw", 400,
     json.dumps({"error": {"message": "Provider returned error", "code": 400, "metadata": {
         "raw": json.dumps({"error": {"message": "Unrecognized request argument supplied: reasoning_effort"}}),
         "provider_name": "Azure"}}}).encode(),
     {Fix(DROP, "reasoning_effort")}),
    ("google's openai endpoint", 400,
     json.dumps([{"error": {"code": 400, "message": 'Invalid JSON payload received. Unknown name "user": Cannot find '
                            "field.", "status": "INVALID_ARGUMENT"}}]).encode(),
     {Fix(DROP, "user")}),
    ("groq-style backticks", 400, openai_error("`parallel_tool_calls` is not supported with this model"),
     {Fix(DROP, "parallel_tool_calls")}),
    ("rust server (serde)", 422,
     b"Failed to deserialize the JSON body into the target type: unknown field `stream_options`, expected one of "
     b"`model`, `messages`, `max_tokens` at line 1 column 300",
     {Fix(DROP, "stream_options")}),
    ("python server passing kwargs on", 400,
     openai_error("AsyncCompletions.create() got an unexpected keyword argument 'parallel_tool_calls'"),
     {Fix(DROP, "parallel_tool_calls")}),
    ("deepseek style", 400,
     openai_error("deepseek-reasoner does not support the parameter `parallel_tool_calls`"),
     {Fix(DROP, "parallel_tool_calls")}),
]


@pytest.mark.parametrize(("status", "body", "fixes"), [c[1:] for c in OPENAI_CASES], ids=[c[0] for c in OPENAI_CASES])
def test_openai_refusals_become_fixes(status: int, body: bytes, fixes: set[Fix]) -> None:
    assert openai_fixes(status, body, OPENAI_SENT) == fixes


OPENAI_CLIENT_ERRORS = [
    ("context overflow", openai_error(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens. "
        "Please reduce the length of the messages.", param="messages", code="context_length_exceeded")),
    ("max_tokens too large names max_tokens, not another name", openai_error(
        "max_tokens is too large: 64000. This model supports at most 16384 completion tokens, whereas you provided "
        "64000.", param="max_tokens", code="invalid_value")),
    ("max_tokens refused without an alternative", openai_error(
        "Unsupported parameter: 'max_tokens' is not supported with this model.", param="max_tokens",
        code="unsupported_parameter")),
    ("litellm names a parameter the balancer did not send", litellm_body("['context_management']")),
    ("litellm names tools, which the request cannot do without", litellm_body("['tools']")),
    ("litellm's missing database", openai_error("No connected db.", type="no_db_connection")),
    ("a plain bad request", b"Bad Request"),
    ("a user not allowed", openai_error("user is not allowed to access model gpt-4o")),
    ("a tool_choice value problem, not a refusal", openai_error(
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")),
    ("a message content problem", openai_error("Invalid type for 'messages[2].content': expected a string.")),
    ("not JSON, names nothing", b"<html><body>400 Bad Request</body></html>"),
]


@pytest.mark.parametrize("body", [c[1] for c in OPENAI_CLIENT_ERRORS], ids=[c[0] for c in OPENAI_CLIENT_ERRORS])
def test_openai_client_errors_give_no_fix(body: bytes) -> None:
    assert openai_fixes(400, body, OPENAI_SENT) == frozenset()


def test_only_refusals_statuses_are_read() -> None:
    body = litellm_body("['reasoning_effort']")
    assert openai_fixes(500, body, OPENAI_SENT) == frozenset()
    assert openai_fixes(404, body, OPENAI_SENT) == frozenset()
    assert openai_fixes(401, body, OPENAI_SENT) == frozenset()


def test_a_parameter_already_left_out_is_not_fixed_again() -> None:
    sent = sent_openai({"model": "m", "messages": [], "max_tokens": 5})
    assert openai_fixes(400, litellm_body("['reasoning_effort']"), sent) == frozenset()


ANTHROPIC_CASES = [
    ("anthropic's own words for an unknown field", anthropic_error("context_management: Extra inputs are not "
                                                                   "permitted"),
     {Fix(DROP, "context_management")}),
    ("output_config", anthropic_error("output_config: Extra inputs are not permitted"), {Fix(DROP, "output_config")}),
    ("a field inside an optional field", anthropic_error("output_config.format: Extra inputs are not permitted"),
     {Fix(DROP, "output_config")}),
    ("anthropic's words for beta values", anthropic_error(
        "Unexpected value(s) `context-management-2025-06-27`, `effort-2025-11-24` for the `anthropic-beta` header. "
        "Please consult our documentation at docs.anthropic.com or try again without the header."),
     {Fix(DROP_BETA, "context-management-2025-06-27"), Fix(DROP_BETA, "effort-2025-11-24")}),
    ("a relay's words for a beta", json.dumps({"error": {"message": "invalid beta flag: interleaved-thinking-2025-05-14"
                                                        }}).encode(),
     {Fix(DROP_BETA, "interleaved-thinking-2025-05-14")}),
    ("bedrock", json.dumps({"message": "extraneous key [context_management] is not permitted"}).encode(),
     {Fix(DROP, "context_management")}),
    ("a go relay", json.dumps({"error": {"type": "invalid_request_error",
                                         "message": 'json: unknown field "context_management"'}}).encode(),
     {Fix(DROP, "context_management")}),
    ("a fastapi relay, 422", json.dumps({"detail": [{"type": "extra_forbidden", "loc": ["body", "output_config"],
                                                     "msg": "Extra inputs are not permitted",
                                                     "input": {"effort": "high"}}]}).encode(),
     {Fix(DROP, "output_config")}),
    ("adaptive thinking unknown to an older relay", anthropic_error(
        "thinking: Input tag 'adaptive' found using 'type' does not match any of the expected tags: 'enabled', "
        "'disabled'"),
     {Fix(DROP, "thinking", once=True)}),
    ("anthropic's words for a system role", anthropic_error(
        'Unexpected role "system". The Messages API accepts a top-level `system` parameter, not "system" as an input '
        "message role."),
     {Fix(FOLD_SYSTEM)}),
    ("pydantic's literal error on a role", anthropic_error("messages.2.role: Input should be 'user' or 'assistant'"),
     {Fix(FOLD_SYSTEM)}),
    ("serde's unknown variant", b"unknown variant `system`, expected `user` or `assistant` at line 1 column 900",
     {Fix(FOLD_SYSTEM)}),
    ("an invalid thinking signature: only the thinking goes", anthropic_error(
        "messages.1.content.0: Invalid `signature` in `thinking` block"), {Fix(STRIP_THINKING)}),
    ("a signature worded otherwise", anthropic_error("Invalid signature in thinking block"), {Fix(STRIP_THINKING)}),
]


@pytest.mark.parametrize(("body", "fixes"), [c[1:] for c in ANTHROPIC_CASES], ids=[c[0] for c in ANTHROPIC_CASES])
def test_anthropic_refusals_become_fixes(body: bytes, fixes: set[Fix]) -> None:
    assert anthropic_fixes(400, body, ANTHROPIC_SENT) == fixes


ANTHROPIC_CLIENT_ERRORS = [
    ("prompt too long", anthropic_error("prompt is too long: 215000 tokens > 200000 maximum")),
    ("roles must alternate", anthropic_error(
        'messages: roles must alternate between "user" and "assistant", but found multiple "user" roles in a row')),
    ("invalid JSON", anthropic_error("There was an error parsing the body: Expecting ',' delimiter: line 1 column 2")),
    ("a bad tool schema", anthropic_error(
        "tools.3.custom.input_schema: JSON schema is invalid. It must match JSON Schema draft 2020-12")),
    ("an unknown field inside a tool", anthropic_error("tools.0.custom.defer_loading: Extra inputs are not permitted")),
    ("an unknown field inside a message", anthropic_error(
        "messages.1.content.0.cache_control.ttl: Extra inputs are not permitted")),
    ("max_tokens too large", anthropic_error(
        "max_tokens: 128000 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5")),
    ("a thinking budget too small: a value, not an unknown kind", anthropic_error(
        "thinking.budget_tokens: Input should be greater than or equal to 1024")),
    ("temperature with thinking", anthropic_error("`temperature` may only be set to 1 when thinking is enabled")),
    ("a missing field", anthropic_error("messages.0.content: Field required")),
    ("an effort value Anthropic does not take", anthropic_error(
        "output_config.effort: Input should be 'low', 'medium' or 'high'")),
    ("a thinking type value", anthropic_error("thinking.type: Input should be 'enabled' or 'disabled'")),
    ("a thinking tag Anthropic does not take either", anthropic_error(
        "thinking.type: Input tag 'bogus' found using 'type' does not match any of the expected tags: 'enabled', "
        "'disabled', 'adaptive'")),
    ("an unknown part of an optional field", anthropic_error("output_config.bogus: Extra inputs are not permitted")),
    ("a missing part of an optional field", anthropic_error("thinking.budget_tokens: Field required")),
    ("a type error in an optional field", anthropic_error("metadata.user_id: Input should be a valid string")),
    ("a role literal error on a message that is no system message", anthropic_error(
        "messages.0.role: Input should be 'user' or 'assistant'")),
    ("a beta the request did not send", anthropic_error(
        "Unexpected value(s) `files-api-2025-04-14` for the `anthropic-beta` header.")),
    ("beta text naming no sent beta", anthropic_error("invalid beta flag")),
]


@pytest.mark.parametrize("body", [c[1] for c in ANTHROPIC_CLIENT_ERRORS], ids=[c[0] for c in ANTHROPIC_CLIENT_ERRORS])
def test_anthropic_client_errors_give_no_fix(body: bytes) -> None:
    assert anthropic_fixes(400, body, ANTHROPIC_SENT) == frozenset()


# The client's own text echoed back in an error: never read as the server's words.
ECHOES = [
    ("pydantic's input echoes the client's text", 422, json.dumps({"detail": [{
        "type": "missing", "loc": ["body", "messages", 0, "content", 0, "type"], "msg": "Field required",
        "input": {"txt": "note: 'thinking' is not supported; metadata: Extra inputs are not permitted"}}]}).encode()),
    ("pydantic's ctx", 422, json.dumps({"detail": [{
        "type": "literal_error", "loc": ["body", "thinking", "type"], "msg": "Input should be 'enabled'",
        "ctx": {"expected": "context_management: Extra inputs are not permitted"}}]}).encode()),
    ("a message quoting the prompt", 400, anthropic_error(
        "Invalid message content: got 'metadata is not supported' and 'context_management: Extra inputs are not "
        "permitted'")),
    ("a refusal wording mid-sentence, after quoted text", 400, anthropic_error(
        "messages.0.content: 'please reply: context_management is not supported' is too long")),
    ("a field of the error that is not its message", 400, json.dumps({"type": "error", "error": {
        "type": "invalid_request_error", "message": "Bad request",
        "request": {"prompt": "output_config: Extra inputs are not permitted"}}}).encode()),
    ("a beta named in an echo", 400, anthropic_error(
        "messages.1.content: 'invalid beta context-management-2025-06-27' is not valid UTF-8")),
    ("a system role named in an echo", 400, anthropic_error(
        "messages.0.content: 'Unexpected role \"system\"' is too long")),
]


@pytest.mark.parametrize(("status", "body"), [c[1:] for c in ECHOES], ids=[c[0] for c in ECHOES])
def test_the_clients_own_text_echoed_in_an_error_gives_no_fix(status: int, body: bytes) -> None:
    assert anthropic_fixes(status, body, ANTHROPIC_SENT) == frozenset()


OPENAI_ECHOES = [
    openai_error("Invalid message content: got 'tool_choice is not supported' and 'reasoning_effort is not "
                 "supported'"),
    openai_error("Invalid value for 'messages[0].content': 'Unsupported parameter: user' is not a string"),
    json.dumps({"detail": [{"type": "string_type", "loc": ["body", "messages", 0, "content"],
                            "msg": "Input should be a valid string",
                            "input": "[{'type': 'extra_forbidden', 'loc': ('body', 'user')}]"}]}).encode(),
]


@pytest.mark.parametrize("body", OPENAI_ECHOES, ids=["quoted", "after a quoted prefix", "a repr in the input"])
def test_the_clients_own_text_echoed_in_an_openai_error_gives_no_fix(body: bytes) -> None:
    assert openai_fixes(400, body, OPENAI_SENT) == frozenset()


def test_a_role_literal_error_on_a_system_message_folds_it() -> None:
    # CLAUDE_CODE_BODY's message 2 is its system message
    assert anthropic_fixes(400, anthropic_error("messages.2.role: Input should be 'user' or 'assistant'"),
                           ANTHROPIC_SENT) == {Fix(FOLD_SYSTEM)}
    assert anthropic_fixes(400, anthropic_error("messages.3.role: Input should be 'user' or 'assistant'"),
                           ANTHROPIC_SENT) == frozenset()


def test_a_tag_anthropic_takes_is_left_out_of_that_request_only() -> None:
    body = anthropic_error("thinking.type: Input tag 'adaptive' found using 'type' does not match any of the "
                           "expected tags: 'enabled', 'disabled'")
    (fix,) = anthropic_fixes(400, body, ANTHROPIC_SENT)
    assert fix.kind == DROP and fix.name == "thinking" and not fix.learned


def test_a_signature_error_without_signed_thinking_sent_gives_no_fix() -> None:
    sent = sent_anthropic({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}, [])
    assert anthropic_fixes(400, anthropic_error("Invalid `signature` in `thinking` block"), sent) == frozenset()


def test_system_refusal_without_system_messages_sent_gives_no_fix() -> None:
    sent = sent_anthropic({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}, [])
    assert anthropic_fixes(400, anthropic_error('Unexpected role "system".'), sent) == frozenset()


def test_essential_fields_are_never_dropped_even_when_named() -> None:
    for field in ANTHROPIC_ESSENTIAL:
        body = anthropic_error(f"{field}: Extra inputs are not permitted")
        assert anthropic_fixes(400, body, ANTHROPIC_SENT) == frozenset(), field


def test_what_a_request_sent_is_read_from_its_body_and_beta_headers() -> None:
    sent = sent_anthropic(CLAUDE_CODE_BODY, [("anthropic-beta", "a-1, b-2"), ("Anthropic-Beta", "c-3"), ("x", "y")])
    assert sent.betas == ("a-1", "b-2", "c-3")
    assert sent.system_messages and sent.signed_thinking
    assert "context_management" in sent.keys


# -- properties --------------------------------------------------------------------------------------------------

_NAMES = st.sampled_from(sorted(OPENAI_DROPPABLE | {"tools", "messages", "model", "max_tokens", "stream", "n",
                                                    "logprobs", "context_management", "system", "top_k"}))
_TEMPLATES = st.sampled_from([
    "Unsupported parameter: '{}' is not supported with this model.",
    "`{}` is not supported", "{}: Extra inputs are not permitted", "unknown field `{}`",
    "openai does not support parameters: ['{}']", "Unrecognized request argument supplied: {}",
    "got an unexpected keyword argument '{}'", "extraneous key [{}] is not permitted",
    "The {} value is wrong", "{} must be positive", "{}",
])


@quick_and_deep(300, template=_TEMPLATES, name=_NAMES, sent_names=st.sets(_NAMES), noise=st.text(max_size=40))
def test_openai_fixes_only_touch_what_was_sent_and_can_be_done_without(
    template: str, name: str, sent_names: set[str], noise: str
) -> None:
    sent = SentRequest(frozenset(sent_names))
    fixes = openai_fixes(400, openai_error(noise + template.format(name) + noise), sent)
    for fix in fixes:
        assert fix.name in sent.keys
        if fix.kind == DROP:
            assert fix.name in OPENAI_DROPPABLE
        else:
            assert fix.kind == RENAME and fix.name in ("max_tokens", "max_completion_tokens")


@quick_and_deep(300, template=_TEMPLATES, name=_NAMES, sent_names=st.sets(_NAMES), noise=st.text(max_size=40))
def test_anthropic_fixes_never_drop_an_essential_field_or_one_not_sent(
    template: str, name: str, sent_names: set[str], noise: str
) -> None:
    sent = SentRequest(frozenset(sent_names))
    for fix in anthropic_fixes(400, anthropic_error(noise + template.format(name) + noise), sent):
        assert fix.kind == DROP and fix.name in sent.keys and fix.name not in ANTHROPIC_ESSENTIAL


@quick_and_deep(200, body=st.binary(max_size=400))
def test_any_error_body_is_read_without_raising(body: bytes) -> None:
    openai_fixes(400, body, OPENAI_SENT)
    anthropic_fixes(400, body, ANTHROPIC_SENT)


@pytest.mark.parametrize("traceback_lines", [200, 20_000], ids=["long", "beyond the parse limit"])
def test_a_long_error_body_is_read_off_the_event_loop_and_still_understood(traceback_lines: int) -> None:
    message = LITELLM.format(names="['reasoning_effort']") + "\nTraceback (most recent call last):\n"
    body = openai_error(message + '  File "/srv/litellm/proxy.py", line 1, in call\n' * traceback_lines)
    assert len(body) > INLINE_BODY
    fixes = asyncio.run(recognised(openai_fixes, 400, body, OPENAI_SENT))
    assert fixes == {Fix(DROP, "reasoning_effort")}


def test_a_long_run_of_blanks_is_read_as_one_space() -> None:
    # A provider's 400 of `unsupported parameter` and thousands of spaces once took minutes to match (the optional
    # blanks around optional punctuation could split the run in very many ways), holding every stream meanwhile.
    text = "unsupported parameter" + " \t" * 3000 + ": 'reasoning_effort'"
    assert all("  " not in part and "\t" not in part and len(part) <= 1000 for part in clauses(text))
    body = json.dumps({"error": {"message": "unsupported parameter" + " " * 3000 + "!"}}).encode()
    assert openai_fixes(400, body, sent_openai({"model": "m", "messages": [], "reasoning_effort": "high"})) == set()
