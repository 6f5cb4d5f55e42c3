"""What the property tests (tests/test_fuzz_*.py) found, pinned as plain regression tests (one per minimal
failing input). A bug found while it is still open is pinned as an `xfail(strict=True)` test (`BUG: ...`), so that
the property keeps guarding everything else; the fix makes it XPASS, which fails the run until the marker goes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from addon.affinity import session_key
from addon.config import ConfigError, ProviderConfig, parse_config
from addon.openai_errors import to_anthropic_error
from addon.openai_request import OpenAIOptions, ToolNames, to_openai_request
from addon.openai_response import to_anthropic_message
from addon.openai_stream import StreamTranslator
from addon.token_count import count_input_tokens
from fuzzing import CUT_EMOJI, DEEP, ENVIRON
from helpers import (
    anthropic_provider,
    assert_stream_grammar,
    openai_provider,
    parse_sse,
)

# The huge strings some examples hold make hypothesis warn about the size of their repr; nothing else.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


def test_regression_count_tokens_block_with_a_non_string_type():
    # was: AttributeError 'int' object has no attribute 'endswith' (token_count._collect_block)
    assert count_input_tokens({"messages": [{"role": "user", "content": [{"type": 5}]}]}) >= 0


def test_regression_session_key_with_a_lone_surrogate_user_id():
    # was: UnicodeEncodeError in affinity.session_key (user_id.encode())
    assert session_key({"metadata": {"user_id": "\ud800"}}, []).startswith("user:")


def test_regression_session_key_with_a_non_utf8_client_key():
    # mitmproxy decodes header bytes that are not UTF-8 with surrogateescape; was: UnicodeEncodeError
    assert session_key({}, [("x-api-key", "k\udcff")]).startswith("client:")


def test_regression_error_code_that_isdigit_but_not_int():
    # was: ValueError invalid literal for int() with base 10: '²' (openai_errors._effective_status)
    status, body = to_anthropic_error(200, '{"error": {"message": "x", "code": "²"}}'.encode())
    assert status == 502 and json.loads(body)["type"] == "error"


def test_regression_error_message_with_a_huge_number():
    # was: ValueError Exceeds the limit (4300 digits) for integer string conversion (openai_errors._first_number)
    status, body = to_anthropic_error(400, b"prompt is too long: " + b"1" * 5000 + b" tokens > 100 maximum")
    assert status == 400 and json.loads(body)["type"] == "error"


def test_regression_error_detail_with_a_non_list_loc():
    # was: TypeError 'bool' object is not iterable (openai_errors._detail_text), found as {"detail":[{"loc":true}]}
    status, body = to_anthropic_error(422, b'{"detail": [{"loc": 1, "msg": "bad"}]}')
    assert status == 400 and "bad" in json.loads(body)["error"]["message"]


def test_regression_error_body_nested_too_deeply():
    # was: RecursionError from json.loads (openai_errors.parse_error caught only ValueError)
    status, body = to_anthropic_error(500, b"[" * DEEP)
    assert status >= 500 and json.loads(body)["type"] == "error"


def test_regression_tool_arguments_nested_too_deeply():
    # was: RecursionError (openai_response.parse_arguments caught only ValueError)
    body = {"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[" * DEEP}}]},
                         "finish_reason": "tool_calls"}]}
    message = to_anthropic_message(body, "claude-sonnet-4-5", ToolNames())
    assert message["content"][0]["input"] == {"_raw_arguments": "[" * DEEP}


def _exchange(parsed: dict) -> Any:
    from addon.exchange import Exchange

    return Exchange(kind="messages", method="POST", path="/v1/messages", client_headers=[],
                    body=json.dumps(parsed).encode(), parsed=parsed, requested_model=parsed["model"],
                    stream=False, idle_timeout=10, on_committed_failure=lambda *a: None)


def test_regression_openai_request_with_a_lone_surrogate():
    # Text cut in the middle of an emoji arrives as JSON "\ud83d". Was: UnicodeEncodeError in
    # openai_adapter.build_request (json.dumps(ensure_ascii=False).encode()), HTTP 500 from the balancer.
    from addon.openai_adapter import build_request

    request, _ = build_request(ProviderConfig(**openai_provider("o", "http://127.0.0.1:9")), _exchange(CUT_EMOJI))
    assert json.loads(request.content)["messages"][0]["content"] == "cut \ud83d"


def test_regression_mapped_model_with_a_lone_surrogate():
    # The same with an Anthropic-type provider that maps the model. Was: UnicodeEncodeError in upstream.with_model.
    from addon.anthropic_adapter import build_request

    provider = ProviderConfig(**anthropic_provider("a", "http://127.0.0.1:9", big_model="big"))
    request, _ = build_request(provider, _exchange(CUT_EMOJI))
    assert json.loads(request.content)["model"] == "big"
    assert json.loads(request.content)["messages"][0]["content"] == "cut \ud83d"


def test_regression_stream_payload_nested_too_deeply():
    # was: RecursionError from StreamTranslator.feed (openai_stream._parse caught only ValueError)
    translator = StreamTranslator("claude-sonnet-4-5", ToolNames(), message_id="msg_x")
    out = translator.feed(b"data: " + b"[" * DEEP + b"\n\n") + translator.finish()
    assert_stream_grammar(parse_sse(out), finished=True)


def test_regression_stream_tool_arguments_nested_too_deeply():
    # was: RecursionError when the held arguments were parsed as the tool block closed
    translator = StreamTranslator("claude-sonnet-4-5", ToolNames(), message_id="msg_x")
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "[" * DEEP}}]}}]}
    out = translator.feed(b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n") + translator.finish()
    assert_stream_grammar(parse_sse(out), finished=True)


def test_regression_config_with_a_recursive_alias():
    # was: RecursionError (config.substitute_env recursed forever), not ConfigError
    with pytest.raises(ConfigError):
        parse_config("providers: &p [*p]\n", "providers.yaml", ENVIRON)


def test_regression_config_nested_too_deeply():
    # was: RecursionError from yaml.safe_load, not ConfigError
    with pytest.raises(ConfigError):
        parse_config("providers: " + "[" * 5000, "providers.yaml", ENVIRON)


def test_regression_orphan_tool_result_separates_calls_from_their_answers():
    body = {"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_b", "content": ""}]},
    ]}
    out, _ = to_openai_request(body, "gpt-x", OpenAIOptions())
    roles = [m["role"] for m in out["messages"]]
    assert roles[:3] == ["user", "assistant", "tool"], roles


def test_regression_config_accepts_a_port_out_of_range():
    with pytest.raises(ConfigError):
        parse_config("providers:\n  - name: a\n    base_url: http://h:99999\n    auth_value: k\n", "providers.yaml",
                     ENVIRON)
