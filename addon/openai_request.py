"""Anthropic Messages request -> OpenAI Chat Completions request (pure, no I/O).

The OpenAI body is built from an allow-list: only fields this module knows how to translate are ever written, so
Anthropic-only fields (`context_management`, `container`, `mcp_servers`, `cache_control`, `top_k`,
`output_config`, `thinking`, `metadata`, betas added tomorrow) can never leak to a provider that would reject them.

Conversation rules (see docs/design.md, "Translation rules", the request):
- consecutive same-role turns are merged first at the Anthropic level, so every user turn's tool results are
  emitted together, as `tool` messages in block order, followed by ONE `user` message with the rest;
- an assistant turn becomes one message: text joined, every `tool_use` as a `tool_calls` entry in order;
- every tool call gets an answer (a synthesized error result for an interrupted call), and a tool result whose
  call is not in the immediately preceding assistant message becomes user text, because OpenAI-compatible servers
  reject both an unanswered call and an orphan `tool` message;
- messages that end up empty are skipped and consecutive same-role messages merged again.

Deliberate choices not spelled out there:
- `tools` with a `type` other than `custom`: `bash_*` and `text_editor_*` become function tools with Anthropic's
  documented schemas; every other typed tool (server tools, computer use, memory, tool search) is dropped.
- a `document` with a base64 PDF becomes an OpenAI `file` part; text/content documents are inlined as text; a URL or
  file-id document, which an OpenAI server cannot fetch, becomes a one-line text placeholder.
- DeepSeek mode puts `reasoning_content` (possibly "") on every assistant message, because DeepSeek's thinking mode
  answers 400 when an assistant turn lacks it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

OPENAI_NAME_LIMIT = 64
_VALID_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_NAME_HASH_CHARS = 8
MAX_STOP_SEQUENCES = 4
USER_ID_LIMIT = 64
INTERRUPTED_TOOL_RESULT = "Error: the tool call was interrupted before it returned a result."

# Anthropic's schemas for the client tools it defines itself (the model knows them by name).
_BASH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "description": "The bash command to run."},
        "restart": {"type": "boolean", "description": "Restart the bash session."},
    },
}
_TEXT_EDITOR_COMMANDS = ["view", "create", "str_replace", "insert"]
_TEXT_EDITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "enum": _TEXT_EDITOR_COMMANDS},
        "path": {"type": "string", "description": "Absolute path to the file or directory."},
        "file_text": {"type": "string", "description": "Content of the file to create."},
        "old_str": {"type": "string", "description": "Exact text to replace."},
        "new_str": {"type": "string", "description": "Replacement text (or text to insert)."},
        "insert_line": {"type": "integer", "description": "Line after which to insert."},
        "insert_text": {"type": "string", "description": "Text to insert."},
        "view_range": {"type": "array", "items": {"type": "integer"}, "description": "[start, end] lines."},
    },
    "required": ["command", "path"],
}
_TEXT_EDITOR_DESCRIPTION = "View, create and edit files."
_BASH_DESCRIPTION = "Run commands in a persistent bash shell."
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "minimal": "low", "max": "high", "xhigh": "high"}


@dataclass
class OpenAIOptions:
    """Per-provider switches for the quirks that differ between OpenAI-compatible servers."""

    max_tokens_cap: int | None = None
    stream_options: bool = True
    reasoning: Literal["none", "reasoning_effort", "openrouter", "deepseek"] = "reasoning_effort"
    merge_system_messages: bool = False
    reasoning_budget_buckets: tuple[int, int] = (1024, 8192)


@dataclass
class ToolNames:
    """Renamed tools (only those whose name OpenAI would reject), both ways, to restore names in responses."""

    to_openai: dict[str, str] = field(default_factory=dict)
    to_anthropic: dict[str, str] = field(default_factory=dict)

    def openai(self, name: str) -> str:
        return self.to_openai.get(name, name)

    def original(self, name: str) -> str:
        """The client's exact tool name for a name the provider used; unknown names are returned as they are."""
        return self.to_anthropic.get(name, name)

    def add(self, name: str) -> str:
        if name not in self.to_openai:
            short = openai_tool_name(name)
            if short != name:
                self.to_openai[name] = short
                self.to_anthropic[short] = name
        return self.openai(name)


def openai_tool_name(name: str) -> str:
    """A deterministic name OpenAI accepts: the name itself if valid, else a readable prefix plus a hash."""
    if _VALID_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_NAME_HASH_CHARS]
    prefix = _INVALID_NAME_CHARS.sub("_", name)[: OPENAI_NAME_LIMIT - _NAME_HASH_CHARS - 1]
    return f"{prefix}_{digest}"


# ---------------------------------------------------------------------------------------------------------------
# the request


def to_openai_request(body: dict, model: str, options: OpenAIOptions) -> tuple[dict, ToolNames]:
    """The Chat Completions body for an Anthropic Messages body, and the tool renames to undo in the answer."""
    names = ToolNames()
    tools = _tools(body.get("tools"), names)
    _register_history_names(body.get("messages"), names)
    messages = _system_messages(body.get("system")) + _conversation(body.get("messages"), names, options)

    out: dict[str, Any] = {"model": model, "messages": messages}
    max_tokens = _max_tokens(body.get("max_tokens"), options.max_tokens_cap)
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        if isinstance(body.get(key), (int, float)) and not isinstance(body.get(key), bool):
            out[key] = body[key]
    stop = _stop(body.get("stop_sequences"))
    if stop:
        out["stop"] = stop
    if tools:
        out["tools"] = tools
        out.update(_tool_choice(body.get("tool_choice"), names, {t["function"]["name"] for t in tools}))
    user = _user(body.get("metadata"))
    if user:
        out["user"] = user
    out.update(_reasoning(body, options))
    if body.get("stream"):
        out["stream"] = True
        if options.stream_options:
            out["stream_options"] = {"include_usage": True}
    return out, names


def _max_tokens(value: Any, cap: int | None) -> int | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return cap
    return min(value, cap) if cap is not None else value


def _stop(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [s for s in value if isinstance(s, str) and s][:MAX_STOP_SEQUENCES]


def _user(metadata: Any) -> str | None:
    """`metadata.user_id` as OpenAI's `user`: short plain ids kept, anything else (Claude Code sends JSON) hashed."""
    if not isinstance(metadata, dict):
        return None
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        return None
    if _VALID_NAME.match(user_id) and len(user_id) <= USER_ID_LIMIT:
        return user_id
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:USER_ID_LIMIT]


# ---------------------------------------------------------------------------------------------------------------
# thinking / effort


def _reasoning(body: dict, options: OpenAIOptions) -> dict[str, Any]:
    """How much the model should think, in the dialect the provider understands."""
    if options.reasoning == "none":
        return {}
    budget, effort = _thinking_request(body, options.reasoning_budget_buckets)
    if effort is None:
        return {}
    if options.reasoning == "reasoning_effort":
        return {"reasoning_effort": effort}
    if options.reasoning == "openrouter":
        return {"reasoning": {"max_tokens": budget} if budget is not None else {"effort": effort}}
    return {"thinking": {"type": "enabled"}}  # deepseek


def _thinking_request(body: dict, buckets: tuple[int, int]) -> tuple[int | None, str | None]:
    """(budget_tokens or None, effort or None); effort None means the client did not ask for thinking."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return None, None
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            return None, _configured_effort(body) or "medium"
        return budget, _bucket(budget, buckets)
    if kind == "adaptive":
        return None, _configured_effort(body) or "high"  # Anthropic's default effort is high
    return None, None


def _configured_effort(body: dict) -> str | None:
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    return _EFFORTS.get(effort, "medium") if isinstance(effort, str) else None


def _bucket(budget: int, buckets: tuple[int, int]) -> str:
    low, medium = buckets
    if budget <= low:
        return "low"
    return "medium" if budget <= medium else "high"


# ---------------------------------------------------------------------------------------------------------------
# tools


def _tools(tools: Any, names: ToolNames) -> list[dict]:
    if not isinstance(tools, list):
        return []
    out = []
    for tool in tools:
        converted = _tool(tool, names) if isinstance(tool, dict) else None
        if converted is not None:
            out.append(converted)
    return out


def _tool(tool: dict, names: ToolNames) -> dict | None:
    """One function tool, or None for tools an OpenAI model cannot call (server tools)."""
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        return None
    kind = tool.get("type")
    if kind in (None, "custom"):
        schema = tool.get("input_schema")
        parameters = dict(schema) if isinstance(schema, dict) else {"type": "object", "properties": {}}
        description = tool.get("description")
    elif isinstance(kind, str) and kind.startswith("bash_"):
        parameters, description = dict(_BASH_SCHEMA), _BASH_DESCRIPTION
    elif isinstance(kind, str) and kind.startswith("text_editor_"):
        parameters, description = _text_editor_schema(kind), _TEXT_EDITOR_DESCRIPTION
    else:
        return None
    function: dict[str, Any] = {"name": names.add(name)}
    if isinstance(description, str) and description:
        function["description"] = description
    function["parameters"] = parameters
    return {"type": "function", "function": function}


def _text_editor_schema(kind: str) -> dict:
    schema = json.loads(json.dumps(_TEXT_EDITOR_SCHEMA))
    if kind == "text_editor_20250124":  # the only version that still has undo_edit
        schema["properties"]["command"]["enum"].append("undo_edit")
    return schema


def _register_history_names(messages: Any, names: ToolNames) -> None:
    """Tools called earlier may no longer be offered, yet their calls in the history still need valid names."""
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                names.add(block["name"])


def _tool_choice(choice: Any, names: ToolNames, offered: set[str]) -> dict[str, Any]:
    if not isinstance(choice, dict):
        return {}
    kind = choice.get("type")
    out: dict[str, Any] = {}
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        name = names.openai(choice["name"])
        # a forced tool that was dropped (server tool) cannot be forced: let the model choose instead
        out["tool_choice"] = {"type": "function", "function": {"name": name}} if name in offered else "auto"
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


# ---------------------------------------------------------------------------------------------------------------
# system and conversation


def _text_of(content: Any, separator: str = "\n\n") -> str:
    """The text of a string or a list of blocks (non-text blocks ignored, empty texts dropped)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return separator.join(t for t in texts if isinstance(t, str) and t)


# Claude Code's first system block: `x-anthropic-billing-header: cc_version=2.1.197.6e2; ...`, addressed to
# Anthropic's billing, and different on every run; at the head of an OpenAI-type provider's prompt it would only
# spoil that provider's prefix cache.
BILLING_MARKER = "x-anthropic-billing-header:"


def _system_messages(system: Any) -> list[dict]:
    if isinstance(system, list):
        system = [b for b in system if not (isinstance(b, dict) and str(b.get("text", "")).startswith(BILLING_MARKER))]
    text = _text_of(system)
    return [{"role": "system", "content": text}] if text else []


def _conversation(messages: Any, names: ToolNames, options: OpenAIOptions) -> list[dict]:
    turns = _merged_turns(messages, options.merge_system_messages)
    out: list[dict] = []
    for role, blocks in turns:
        if role == "assistant":
            out.extend(_assistant_messages(blocks, names, options))
        elif role == "system":
            text = _text_of(blocks)
            if text:
                out.append({"role": "system", "content": text})
        else:
            out.extend(_user_messages(blocks))
    out = _merge_same_role(out)
    out = _pair_tool_messages(out)
    return _merge_same_role(out)


def _merged_turns(messages: Any, system_as_user: bool) -> list[tuple[str, list]]:
    """(role, blocks) with consecutive same-role turns joined, as the Anthropic API itself treats them."""
    turns: list[tuple[str, list]] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            continue
        blocks = _blocks(message.get("content"))
        if role == "system" and system_as_user:
            # merged into the next user turn; the text goes first, before whatever the user says
            role = "user"
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    return turns


def _blocks(content: Any) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _assistant_messages(blocks: list, names: ToolNames, options: OpenAIOptions) -> list[dict]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str) and block["text"]:
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            reasoning.append(block["thinking"])
        elif kind == "tool_use":
            calls.append(_tool_call(block, names))
    if not texts and not calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if options.reasoning == "deepseek":
        message["reasoning_content"] = "".join(reasoning)
    return [message]


def _tool_call(block: dict, names: ToolNames) -> dict:
    arguments = block.get("input")
    return {
        "id": str(block.get("id") or ""),
        "type": "function",
        "function": {
            "name": names.openai(str(block.get("name") or "")),
            "arguments": json.dumps(arguments if arguments is not None else {}, ensure_ascii=False),
        },
    }


def _user_messages(blocks: list) -> list[dict]:
    """Tool results first (block order), then one user message with everything else, images from results last."""
    tool_messages: list[dict] = []
    parts: list[dict] = []
    result_images: list[dict] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "tool_result":
            text, images = _tool_result_content(block)
            tool_messages.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""), "content": text})
            result_images.extend(images)
        else:
            parts.extend(_user_parts(block))
    parts.extend(result_images)
    user = _user_message(parts)
    return tool_messages + ([user] if user else [])


def _tool_result_content(block: dict) -> tuple[str, list[dict]]:
    content = block.get("content")
    texts: list[str] = []
    images: list[dict] = []
    for inner in _blocks(content):
        for part in _user_parts(inner):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(part)
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    return text, images


def _user_parts(block: dict) -> list[dict]:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return [{"type": "text", "text": text}] if isinstance(text, str) and text else []
    if kind == "image":
        url = _image_url(block.get("source"))
        return [{"type": "image_url", "image_url": {"url": url}}] if url else []
    if kind == "document":
        return _document_parts(block)
    if kind == "search_result":
        text = _text_of(block.get("content"), "\n")
        title = block.get("title")
        return [{"type": "text", "text": f"{title}\n{text}" if title else text}] if text else []
    return []  # thinking, tool_use in a user turn, server tool results: nothing an OpenAI model can read


def _image_url(source: Any) -> str | None:
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    return None


def _document_parts(block: dict) -> list[dict]:
    source = given if isinstance(given := block.get("source"), dict) else {}
    title = block.get("title") if isinstance(block.get("title"), str) else None
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "application/pdf"
        file = {"filename": title or "document.pdf", "file_data": f"data:{media_type};base64,{source['data']}"}
        return [{"type": "file", "file": file}]
    if kind == "text" and isinstance(source.get("data"), str):
        text = source["data"]
    elif kind == "content":
        text = _text_of(source.get("content"))
    elif kind == "url":
        text = f"[document: {source.get('url')}]"
    else:
        text = "[document not available]"
    if title and kind in ("text", "content"):
        text = f"{title}\n\n{text}"
    return [{"type": "text", "text": text}] if text else []


def _user_message(parts: list[dict]) -> dict | None:
    if not parts:
        return None
    return {"role": "user", "content": _flatten(parts)}


def _flatten(parts: list[dict]) -> str | list[dict]:
    """Text-only content as a plain string (what every OpenAI-compatible server accepts)."""
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


# ---------------------------------------------------------------------------------------------------------------
# message list repairs


def _merge_same_role(messages: list[dict]) -> list[dict]:
    out: list[dict] = []
    for message in messages:
        previous = out[-1] if out else None
        if previous is not None and previous["role"] == message["role"] and message["role"] != "tool":
            out[-1] = _merge_two(previous, message)
        else:
            out.append(message)
    return out


def _merge_two(first: dict, second: dict) -> dict:
    merged = dict(first)
    merged["content"] = _join_content(first.get("content"), second.get("content"))
    if first["role"] == "assistant":
        calls = (first.get("tool_calls") or []) + (second.get("tool_calls") or [])
        if calls:
            merged["tool_calls"] = calls
        if "reasoning_content" in first or "reasoning_content" in second:
            merged["reasoning_content"] = (first.get("reasoning_content") or "") + (
                second.get("reasoning_content") or ""
            )
    return merged


def _join_content(first: Any, second: Any) -> Any:
    if not first:
        return second
    if not second:
        return first
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}"
    return _as_parts(first) + _as_parts(second)


def _as_parts(content: Any) -> list[dict]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _pair_tool_messages(messages: list[dict]) -> list[dict]:
    """Every tool call answered right after its assistant message; orphan results turned into user text."""
    out: list[dict] = []
    pending: list[str] = []  # ids of the last assistant message's calls still without an answer
    orphans: list[dict] = []  # results of calls nobody made: said as user text after the real answers

    def close_run() -> None:
        out.extend(_synthesized_results(pending))
        if orphans:
            out.append({"role": "user", "content": "\n\n".join(_orphan_text(m) for m in orphans)})
        pending.clear()
        orphans.clear()

    for message in messages:
        if message["role"] == "tool":
            if message["tool_call_id"] in pending:
                pending.remove(message["tool_call_id"])
                out.append(message)
            else:
                orphans.append(message)
            continue
        close_run()
        out.append(message)
        if message["role"] == "assistant":
            pending.extend(c["id"] for c in message.get("tool_calls") or [])
    close_run()
    return out


def _synthesized_results(ids: list[str]) -> list[dict]:
    return [{"role": "tool", "tool_call_id": call_id, "content": INTERRUPTED_TOOL_RESULT} for call_id in ids]


def _orphan_text(message: dict) -> str:
    return f"[result of tool call {message['tool_call_id']}]\n{message['content']}"
