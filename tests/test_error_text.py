"""What is left of a provider's error message before a client, the log or the admin API sees it."""

from __future__ import annotations

import pytest

from addon.error_text import PATH_PLACEHOLDER, public_message, without_frames, without_paths
from addon.errors import MAX_MESSAGE_CHARS
from addon.redact import Redactor
from fakes import python_traceback

KEY = "sk-ant-api03-EchoedProviderKey-0123456789"


def test_a_20kb_traceback_becomes_its_exception_line() -> None:
    message = python_traceback(KEY)
    assert len(message) > 20_000
    assert public_message(message, Redactor([KEY])) == "ValueError: invalid x-api-key [redacted] for [path]"


def test_chained_python_tracebacks_keep_every_exception_line() -> None:
    message = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/engine.py", line 12, in step\n'
        "    out = model(x)\n"
        "          ^^^^^^^^\n"
        "KeyError: 'x'\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "/srv/app/server.py", line 40, in handle\n'
        "    raise RuntimeError('engine failed')\n"
        "RuntimeError: engine failed"
    )
    assert public_message(message) == "KeyError: 'x'\n\nRuntimeError: engine failed"


def test_frames_without_their_header_go_too() -> None:
    message = 'upstream failed\n  File "/opt/venv/lib/site.py", line 3, in call\n    do()\nstill failing'
    assert without_frames(message) == "upstream failed\nstill failing"


@pytest.mark.parametrize(
    "frames",
    [
        "    at Object.<anonymous> (/app/index.js:1:7)\n    at Module._compile (node:internal/modules/cjs:1256:14)",
        "\tat com.example.Server.handle(Server.java:42)\n\tat java.base/java.lang.Thread.run(Thread.java:833)\n"
        "\t... 12 more",
    ],
    ids=["javascript", "java"],
)
def test_javascript_and_java_frames_go(frames: str) -> None:
    assert public_message(f"Error: boom\n{frames}") == "Error: boom"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cannot open /var/lib/models/llama/weights.bin", f"cannot open {PATH_PLACEHOLDER}"),
        ("config at '/etc/app/conf.yaml' is broken", f"config at '{PATH_PLACEHOLDER}' is broken"),
        ("see ~/logs/today.txt", f"see {PATH_PLACEHOLDER}"),
        ("failed in C:\\srv\\app\\main.py", f"failed in {PATH_PLACEHOLDER}"),
    ],
)
def test_absolute_paths_are_replaced(text: str, expected: str) -> None:
    assert without_paths(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "POST /v1/messages failed upstream",
        "see https://docs.example.com/api/errors/429 for details",
        "model anthropic/claude-sonnet-4 is not available",
        "and/or retry on 2026/05/01",
        "rate limit: 5/min",
    ],
)
def test_api_routes_urls_and_slashes_in_words_are_no_paths(text: str) -> None:
    assert without_paths(text) == text


@pytest.mark.parametrize(
    "message",
    [
        "prompt is too long: 204163 tokens > 200000 maximum",
        "input length and `max_tokens` exceed context limit: 190000 + 32000 > 200000, decrease input length or "
        "`max_tokens` and try again",
        "Overloaded",
        "messages.1.content.0: invalid signature in thinking block",
        "litellm.BadRequestError: UnsupportedParamsError\n\nset drop_params=True",
    ],
)
def test_messages_clients_match_on_pass_unchanged(message: str) -> None:
    assert public_message(message, Redactor([KEY])) == message


def test_public_message_is_bounded_with_an_ellipsis() -> None:
    message = public_message("x" * 50_000)
    assert len(message) == MAX_MESSAGE_CHARS and message.endswith("…")


def test_a_message_that_is_only_frames_leaves_nothing() -> None:
    assert public_message('Traceback (most recent call last):\n  File "/a/b.py", line 1, in x\n    y()\n') == ""
