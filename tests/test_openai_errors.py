"""to_anthropic_error: OpenAI-compatible error answers in Anthropic's status and shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from addon.errors import MAX_MESSAGE_CHARS
from addon.openai_errors import to_anthropic_error


def convert(status: int, body: Any) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    client_status, out = to_anthropic_error(status, raw)
    parsed = json.loads(out)
    assert parsed["type"] == "error" and set(parsed["error"]) == {"type", "message"}
    return client_status, parsed["error"]


def openai(message: str, kind: str = "invalid_request_error", code: Any = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.mark.parametrize(
    ("status", "expected_status", "expected_type"),
    [
        (400, 400, "invalid_request_error"),
        (422, 400, "invalid_request_error"),
        (409, 400, "invalid_request_error"),
        (418, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (402, 402, "billing_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (408, 504, "timeout_error"),
        (504, 504, "timeout_error"),
        (413, 413, "request_too_large"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (502, 502, "api_error"),
        (503, 529, "overloaded_error"),
        (529, 529, "overloaded_error"),
        (520, 502, "api_error"),
    ],
)
def test_each_status_maps_to_an_anthropic_status_and_error_type(status: int, expected_status: int, expected_type: str) -> None:
    assert convert(status, openai("something went wrong")) == (
        expected_status,
        {"type": expected_type, "message": "something went wrong"},
    )


@pytest.mark.parametrize("status", [429, 500, 502])
def test_overloaded_wording_means_overloaded(status: int) -> None:
    assert convert(status, openai("The engine is currently overloaded, please try again later", "server_error")) == (
        529,
        {"type": "overloaded_error", "message": "The engine is currently overloaded, please try again later"},
    )


def test_overloaded_wording_does_not_change_a_client_error() -> None:
    assert convert(400, openai("overloaded is not a valid parameter"))[0] == 400


def test_timeout_type_on_a_5xx() -> None:
    assert convert(500, openai("Request timed out", "timeout")) == (
        504,
        {"type": "timeout_error", "message": "Request timed out"},
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (openai("Invalid model 'x'", code="model_not_found"), "Invalid model 'x'"),
        (
            {
                "object": "error",
                "message": "The model `x` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            },
            "The model `x` does not exist.",
        ),
        ({"error": "model 'llama9' not found, try pulling it first"}, "model 'llama9' not found, try pulling it first"),
        ({"detail": "Not authenticated"}, "Not authenticated"),
        (
            {"detail": [{"loc": ["body", "messages", 0, "content"], "msg": "field required", "type": "missing"}]},
            "body.messages.0.content: field required",
        ),
        ({"message": "bare message"}, "bare message"),
        ([{"error": {"code": 400, "message": "list wrapped", "status": "INVALID_ARGUMENT"}}], "list wrapped"),
        (b"<html><body><h1>400 Bad Request</h1>\n<p>nginx</p></body></html>", "400 Bad Request nginx"),
        (b"upstream connect error", "upstream connect error"),
        (b"", "the provider answered HTTP 400"),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
        ({"error": {"message": None, "type": "x"}}, "the provider answered HTTP 400"),
    ],
)
def test_each_error_body_dialect_gives_its_message(body: Any, message: str) -> None:
    assert convert(400, body) == (400, {"type": "invalid_request_error", "message": message})


def test_long_messages_are_truncated() -> None:
    _, error = convert(500, openai("x" * 10_000))
    assert len(error["message"]) == MAX_MESSAGE_CHARS and error["message"].endswith("…")


def test_error_inside_a_2xx_body_uses_its_code() -> None:
    assert convert(200, {"error": {"message": "Rate limit exceeded", "code": 429}}) == (
        429,
        {"type": "rate_limit_error", "message": "Rate limit exceeded"},
    )
    assert convert(200, {"error": "broken"})[0] == 502


# -- context overflow -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (  # OpenAI
            openai(
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 130532 tokens. Please reduce the length of the messages.",
                code="context_length_exceeded",
            ),
            "prompt is too long: 130532 tokens > 128000 maximum",
        ),
        (  # OpenAI with tools: "resulted in" counts the functions too
            openai(
                "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens (8500 in the messages, 500 in the functions). Please reduce the length of the messages or functions.",
                code="context_length_exceeded",
            ),
            "prompt is too long: 9000 tokens > 8192 maximum",
        ),
        (  # vLLM
            {
                "object": "error",
                "message": "This model's maximum context length is 32768 tokens. However, your request has 40000 input tokens. Please reduce the length of the input messages.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            "prompt is too long: 40000 tokens > 32768 maximum",
        ),
        (  # OpenRouter
            {
                "error": {
                    "message": "This endpoint's maximum context length is 200000 tokens. However, you requested about 250000 tokens (240000 of text input, 10000 in the output). Please reduce the length of either one.",
                    "code": 400,
                }
            },
            "prompt is too long: 240000 tokens > 200000 maximum",
        ),
        (  # llama.cpp
            {
                "error": {
                    "code": 400,
                    "message": "request (12000 tokens) exceeds the available context size (8192 tokens), try increasing it",
                    "type": "exceed_context_size_error",
                }
            },
            "prompt is too long: 12000 tokens > 8192 maximum",
        ),
        (  # Groq / Mistral style
            openai(
                "Please reduce the length of the messages or completion. Prompt contains 40000 tokens, too large for model with 32768 maximum context length"
            ),
            "prompt is too long: 40000 tokens > 32768 maximum",
        ),
        (  # an Anthropic-shaped message passes through
            openai("prompt is too long: 210000 tokens > 200000 maximum"),
            "prompt is too long: 210000 tokens > 200000 maximum",
        ),
        (  # no numbers
            openai("Input is too long for the context window.", code="context_length_exceeded"),
            "prompt is too long: Input is too long for the context window.",
        ),
        (  # Ollama
            {"error": "prompt too long; exceeded max context length by 1200 tokens"},
            "prompt is too long: prompt too long; exceeded max context length by 1200 tokens",
        ),
    ],
)
def test_context_overflow_is_worded_like_anthropic(body: dict, message: str) -> None:
    assert convert(400, body) == (400, {"type": "invalid_request_error", "message": message})


def test_overflow_reported_with_a_5xx_is_still_a_400() -> None:
    body = openai("This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens.")
    assert convert(500, body)[0] == 400


def test_prompt_that_fits_but_not_with_max_tokens() -> None:
    body = openai(
        "This model's maximum context length is 65536 tokens. However, you requested 70000 tokens (62000 in the messages, 8000 in the completion). Please reduce the length of the messages or completion.",
        code="context_length_exceeded",
    )
    assert convert(400, body)[1]["message"] == (
        "input length and `max_tokens` exceed context limit: 62000 + 8000 > 65536, "
        "decrease input length or `max_tokens` and try again"
    )


def test_vllm_max_tokens_too_large() -> None:
    message = (
        "'max_tokens' or 'max_completion_tokens' is too large: 32000. This model's maximum context length is "
        "32768 tokens and your request has 1000 input tokens (32000 > 32768 - 1000)."
    )
    assert convert(400, {"object": "error", "message": message, "code": 400})[1]["message"] == (
        "input length and `max_tokens` exceed context limit: 1000 + 32000 > 32768, "
        "decrease input length or `max_tokens` and try again"
    )


def test_prompt_that_fits_without_a_completion_count_keeps_the_message() -> None:
    message = "This model's maximum context length is 32768 tokens and your request has 1000 input tokens."
    assert convert(400, openai(message))[1] == {"type": "invalid_request_error", "message": message}


@pytest.mark.parametrize(
    "message",
    [
        "Invalid value for 'context_window_size': must be an integer",
        "Rate limit reached for tokens per min",
        "Invalid API key",
    ],
)
def test_other_errors_are_not_mistaken_for_overflow(message: str) -> None:
    assert "prompt is too long" not in convert(400, openai(message))[1]["message"]
