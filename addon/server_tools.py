"""Anthropic server tools: tools that Anthropic runs itself (web search, web fetch, code execution, ...), which an
OpenAI-type provider cannot run (pure, no I/O).

A request that carries one goes to the Anthropic-type providers first (provider_fit.py); an OpenAI-type provider
gets it only when none of those is usable, translated without the tools (openai_request.py drops them), and the
answer then says which tools were dropped (`dropped_tools`, `DROPPED_TOOLS_HEADER`).

Anthropic's tool reference lists server tools by versioned `type`: `web_search_*`, `web_fetch_*`,
`code_execution_*`, `advisor_*`, `tool_search_tool_*` and the MCP connector's `mcp_toolset`. Typed tools that the
client runs (`bash_*`, `text_editor_*`, `memory_*`, `computer_*`) are not server tools.
"""

from __future__ import annotations

import re
from typing import Any

from .openai_request import ToolNames

SERVER_TOOL_PREFIXES = ("web_search_", "web_fetch_", "code_execution_", "advisor_", "tool_search_tool_")
SERVER_TOOL_TYPES = frozenset({"mcp_toolset"})
# Response header naming the tools an OpenAI-type provider was asked without (comma-separated).
DROPPED_TOOLS_HEADER = "x-balancer-dropped-tools"
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_.:-]")
_NAME_CHARS = 64


def is_server_tool(tool: Any) -> bool:
    if not isinstance(tool, dict):
        return False
    kind = tool.get("type")
    return isinstance(kind, str) and (kind in SERVER_TOOL_TYPES or kind.startswith(SERVER_TOOL_PREFIXES))


def carries_server_tools(body: dict[str, Any] | None) -> bool:
    tools = body.get("tools") if body else None
    return isinstance(tools, list) and any(is_server_tool(tool) for tool in tools)


def tool_label(tool: dict[str, Any]) -> str:
    """How a tool is named in a header and the log: its name (else its MCP server's, else its type), reduced to
    characters safe in both."""
    for key in ("name", "mcp_server_name", "type"):
        value = tool.get(key)
        if isinstance(value, str) and value:
            return _NOT_IN_A_NAME.sub("_", value)[:_NAME_CHARS]
    return "unnamed"


def dropped_tools(tools: Any, translated: dict[str, Any], names: ToolNames) -> tuple[str, ...]:
    """The client's tools that the translated (OpenAI) request offers no function for."""
    if not isinstance(tools, list):
        return ()
    offered = {t["function"]["name"] for t in translated.get("tools") or ()}
    out: list[str] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        name = tool.get("name")
        if not (isinstance(name, str) and names.openai(name) in offered):
            label = tool_label(tool)
            if label not in out:
                out.append(label)
    return tuple(out)
