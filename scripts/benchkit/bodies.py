"""Request bodies of a given size, shaped like Claude Code's (tools, a long system prompt, the conversation so far),
built from the test suite's `claude_code_like_request` so that the benchmark and the tests send the same shape."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from typing import Any

from .processes import REPO

SIZES = {"2 KB": 2_000, "100 KB": 100_000, "1 MB": 1_000_000}  # 1 MB stays under 1 MiB, a common body limit
FILLER = "Here is more of the file you asked about. "


@cache
def _claude_code_like_request() -> Any:
    spec = importlib.util.spec_from_file_location("bench_samples", REPO / "tests" / "samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.claude_code_like_request


def _size(request: dict[str, Any]) -> int:
    return len(json.dumps(request).encode())


def sized_request(size: int, stream: bool, model: str = "claude-sonnet-4") -> dict[str, Any]:
    """A Claude Code-like request whose JSON (as `body()` encodes it) is exactly `size` bytes: the oldest turns,
    then tools, then text are dropped until it fits, then the first message is padded."""
    build = _claude_code_like_request()
    per_turn = _size(build(turns=2)) - _size(build(turns=1))
    frame = _size(build(turns=1)) - per_turn
    request = build(turns=max(1, (size - frame) // per_turn + 1))  # one turn too many: cut below
    request.update(model=model, stream=stream)
    messages, tools = request["messages"], request["tools"]
    while _size(request) > size and len(messages) > 2:
        del messages[:2]  # the oldest turn
    while _size(request) > size and tools:
        tools.pop()
    # Still too big (only for bodies of a few KB): shorten the texts, the system prompt first.
    for holder, key in ((request["system"][0], "text"), *((m, "content") for m in messages)):
        over = _size(request) - size
        if over <= 0:
            break
        holder[key] = holder[key][: max(1, len(holder[key]) - over)]
    missing = size - _size(request)
    if missing > 0:
        messages[0]["content"] += (FILLER * (missing // len(FILLER) + 1))[:missing]
    return request


@cache
def body(size: int, stream: bool, model: str = "claude-sonnet-4") -> bytes:
    return json.dumps(sized_request(size, stream, model)).encode()
