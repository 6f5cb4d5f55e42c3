"""A request shaped like Claude Code's main turns (about 200 KB), for tests and the benchmark of counting."""

from __future__ import annotations

from typing import Any


def claude_code_like_request(turns: int = 60) -> dict[str, Any]:
    tools = [
        {
            "name": f"tool_{i}",
            "description": "Does a thing with files in the workspace. " * 30,
            "input_schema": {"type": "object", "properties": {f"p{j}": {"type": "string"} for j in range(8)}},
        }
        for i in range(20)
    ]
    history: list[dict[str, Any]] = []
    for i in range(turns):
        history.append({"role": "user", "content": f"Please refactor module {i}: " + "def f(x): return x * 2\n" * 70})
        history.append({"role": "assistant", "content": "Done. " + "The function now validates its input. " * 40})
    return {
        "model": "claude-sonnet-4",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "You are Claude Code, a coding agent. " * 500}],
        "tools": tools,
        "messages": history,
    }
