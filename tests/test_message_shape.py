"""Which 2xx answers to /v1/messages count as complete Anthropic messages (and which fail over)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from addon.message_shape import message_problem
from helpers import anthropic_message


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


COMPLETE = anthropic_message("claude-sonnet-4", "Hello")


@pytest.mark.parametrize(
    "message",
    [
        COMPLETE,
        {**COMPLETE, "content": []},
        {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "minimal"}]},
        {**COMPLETE, "container": {"id": "c1"}, "context_management": {"applied_edits": []}},
        {**COMPLETE, "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                 {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "x"}},
                                 {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
                                 {"type": "compaction", "content": "summary"}]},
        {**COMPLETE, "stop_reason": "model_context_window_exceeded", "usage": {"input_tokens": 1, "future": [1]}},
        {**COMPLETE, "stop_reason": None},
    ],
    ids=["complete", "empty-content", "minimal", "unknown-fields", "other-blocks", "unknown-values", "no-stop"],
)
def test_messages_clients_can_use_pass(message: dict) -> None:
    assert message_problem(body(message)) is None


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (body(COMPLETE)[:-20], "not valid JSON"),
        (b"<html><body>502 Bad Gateway</body></html>", "not valid JSON"),
        (b"", "not valid JSON"),
        (body([COMPLETE]), "a JSON list"),
        (body({"id": "x", "content": []}), "type is missing"),
        (body({**COMPLETE, "type": "completion"}), "type is 'completion'"),
        (body({**COMPLETE, "role": "user"}), "role is 'user'"),
        (body({**COMPLETE, "content": "Hello"}), "content is not a list"),
        (body({**COMPLETE, "content": [{"text": "no type"}]}), "content[0] has no type"),
        (body({**COMPLETE, "content": [{"type": "text"}]}), "content[0] (text) has no valid text"),
        (body({**COMPLETE, "content": [{"type": "tool_use", "id": "t", "name": "n", "input": "{}"}]}),
         "content[0] (tool_use) has no valid input"),
        (body({**COMPLETE, "usage": 12}), "usage is not an object"),
        (body({**COMPLETE, "stop_reason": 1}), "stop_reason is not a string"),
    ],
    ids=["truncated", "html", "empty", "list", "no-type", "wrong-type", "wrong-role", "content-string",
         "block-without-type", "text-without-text", "tool-input-string", "usage-number", "stop-reason-number"],
)
def test_broken_answers_are_stream_errors_that_say_why(raw: bytes, words: str) -> None:
    problem = message_problem(raw)
    assert problem is not None
    reason, kind = problem
    assert words in reason
    assert kind == "stream_error"


@pytest.mark.parametrize(("error_type", "kind"), [("overloaded_error", "overloaded"), ("api_error", "stream_error")])
def test_an_error_sent_with_http_200_is_a_failure_of_its_class(error_type: str, kind: str) -> None:
    error = {"type": "error", "error": {"type": error_type, "message": 'File "/srv/x.py", line 1\nbusy'}}
    reason, found = message_problem(body(error)) or ("", "")
    assert found == kind
    assert reason == f"error in a 200 answer: {error_type}: busy"
