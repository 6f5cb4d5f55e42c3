"""Golden OpenAI Chat Completions streams, as a provider sends them, with the equivalent non-streamed answer.

One stream per case for the stream rules in docs/design.md ("Translation rules", the stream). Each stream is the raw
bytes of the provider's body (`data: {...}` events); `completion` is the same answer as a non-streamed Chat
Completions body, so a test can check that streaming and non-streaming translate to the same Anthropic content.
Streams that must end in an error give `error_type` and the content accumulated before the error instead.

The streams are written as raw text (r-strings keep JSON escapes readable) and encoded to UTF-8 bytes; a few are
deliberately not in the canonical shape (SSE comments, `data:` without a space, CRLF line ends, no `[DONE]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from addon.openai_request import ToolNames

# A Claude Code MCP tool whose name is longer than OpenAI's 64 characters: the request translation renamed it.
LONG_MCP_NAME = "mcp__plugin_github_enterprise_server__search_repositories_by_topic_and_language"
LONG_MCP_SHORT = "mcp__plugin_github_enterprise_server__search_repositori_6f4b9e2f"
RENAMED = ToolNames(to_openai={LONG_MCP_NAME: LONG_MCP_SHORT}, to_anthropic={LONG_MCP_SHORT: LONG_MCP_NAME})


@dataclass(frozen=True)
class Golden:
    name: str
    stream: bytes
    completion: dict | None = None  # the equivalent non-streamed answer (None for error streams)
    stop_reason: str | None = None
    usage: dict[str, int] | None = None  # expected final Anthropic usage
    names: ToolNames = field(default_factory=ToolNames)
    error_type: str | None = None  # the stream must end with `event: error` of this type
    partial_content: list[dict[str, Any]] | None = None  # content sent before the error
    ends_with_done: bool = True


def _sse(text: str, crlf: bool = False) -> bytes:
    body = text.lstrip("\n")
    return (body.replace("\n", "\r\n") if crlf else body).encode("utf-8")


def _completion(message: dict, finish_reason: str | None, usage: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "id": "chatcmpl-golden",
        "object": "chat.completion",
        "model": "provider-model",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def _call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _usage(input_tokens: int, output_tokens: int, cached: int = 0) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


TEXT_ONLY = Golden(
    name="text_only",
    stream=_sse(r"""
data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":", world!"},"logprobs":null,"finish_reason":null}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}

data: [DONE]

"""),
    completion=_completion(
        {"content": "Hello, world!"}, "stop", {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    ),
    stop_reason="end_turn",
    usage=_usage(12, 4),
)

THINKING_THEN_TEXT = Golden(
    name="thinking_then_text",
    stream=_sse(r"""
data: {"id":"ds-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"finish_reason":null}]}

data: {"id":"ds-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"The user wants "},"finish_reason":null}]}

data: {"id":"ds-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"a greeting."},"finish_reason":null}]}

data: {"id":"ds-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi ","reasoning_content":null},"finish_reason":null}]}

data: {"id":"ds-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"there.","reasoning_content":null},"finish_reason":null}]}

data: {"id":"ds-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"","reasoning_content":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}}

data: [DONE]

"""),
    completion=_completion(
        {"content": "Hi there.", "reasoning_content": "The user wants a greeting."},
        "stop",
        {"prompt_tokens": 100, "completion_tokens": 20, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36},
    ),
    stop_reason="end_turn",
    usage=_usage(36, 20, cached=64),
)

# OpenRouter style: SSE comments while the model starts, `reasoning` and `reasoning_details` carrying the same text.
THINKING_THEN_TOOL = Golden(
    name="thinking_then_tool",
    stream=_sse(r"""
: OPENROUTER PROCESSING

: OPENROUTER PROCESSING

data: {"id":"gen-1","choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":"Need to read ","reasoning_details":[{"type":"reasoning.text","text":"Need to read ","index":0}]},"finish_reason":null}]}

data: {"id":"gen-1","choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":"the file.","reasoning_details":[{"type":"reasoning.text","text":"the file.","index":0}]},"finish_reason":null}]}

data: {"id":"gen-1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_read_1","type":"function","function":{"name":"Read","arguments":""}}]},"finish_reason":null}]}

data: {"id":"gen-1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"type":"function","function":{"arguments":"{\"file_path\":"}}]},"finish_reason":null}]}

data: {"id":"gen-1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"type":"function","function":{"arguments":" \"/tmp/a.py\"}"}}]},"finish_reason":null}]}

data: {"id":"gen-1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"tool_calls","native_finish_reason":"tool_calls"}]}

data: {"id":"gen-1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":{"prompt_tokens":300,"completion_tokens":40,"total_tokens":340,"prompt_tokens_details":{"cached_tokens":200}}}

data: [DONE]

"""),
    completion=_completion(
        {
            "content": None,
            "reasoning": "Need to read the file.",
            "reasoning_details": [{"type": "reasoning.text", "text": "Need to read the file."}],
            "tool_calls": [_call("call_read_1", "Read", '{"file_path": "/tmp/a.py"}')],
        },
        "tool_calls",
        {"prompt_tokens": 300, "completion_tokens": 40, "prompt_tokens_details": {"cached_tokens": 200}},
    ),
    stop_reason="tool_use",
    usage=_usage(100, 40, cached=200),
)

TEXT_THEN_TWO_TOOLS = Golden(
    name="text_then_two_tools",
    stream=_sse(r"""
data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me look."},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"Glob","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"pattern\""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":": \"**/*.py\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"mcp__plugin_github_enterprise_server__search_repositori_6f4b9e2f","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"topic\": \"proxy\", "}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\"language\": \"python\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"id":"chatcmpl-2","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":500,"completion_tokens":60,"total_tokens":560,"prompt_tokens_details":{"cached_tokens":0}}}

data: [DONE]

"""),
    completion=_completion(
        {
            "content": "Let me look.",
            "tool_calls": [
                _call("call_a", "Glob", '{"pattern": "**/*.py"}'),
                _call("call_b", LONG_MCP_SHORT, '{"topic": "proxy", "language": "python"}'),
            ],
        },
        "tool_calls",
        {"prompt_tokens": 500, "completion_tokens": 60, "prompt_tokens_details": {"cached_tokens": 0}},
    ),
    stop_reason="tool_use",
    usage=_usage(500, 60),
    names=RENAMED,
)

# Two parallel calls whose headers and argument fragments alternate between index 0 and index 1.
INTERLEAVED_TOOL_INDICES = Golden(
    name="interleaved_tool_indices",
    stream=_sse(r"""
data: {"id":"chatcmpl-3","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_x","type":"function","function":{"name":"Read","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-3","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_y","type":"function","function":{"name":"Grep","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"file_path\": "}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-3","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"pattern\": \"def \\\\w+\", "}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"/src/{x}.py\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-3","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\"path\": \"/src\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-3","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":80,"completion_tokens":30,"total_tokens":110}}

data: [DONE]

"""),
    completion=_completion(
        {
            "content": None,
            "tool_calls": [
                _call("call_x", "Read", '{"file_path": "/src/{x}.py"}'),
                _call("call_y", "Grep", '{"pattern": "def \\\\w+", "path": "/src"}'),
            ],
        },
        "tool_calls",
        {"prompt_tokens": 80, "completion_tokens": 30},
    ),
    stop_reason="tool_use",
    usage=_usage(80, 30),
)

# Ollama: every call at index 0 with a new id and its whole arguments in one chunk; finish_reason "stop".
OLLAMA_STYLE = Golden(
    name="ollama_style",
    stream=_sse(r"""
data: {"id":"chatcmpl-77","object":"chat.completion.chunk","created":1700000000,"model":"qwen3:8b","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":"","tool_calls":[{"id":"call_k1","index":0,"type":"function","function":{"name":"Bash","arguments":"{\"command\":\"ls -la\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-77","object":"chat.completion.chunk","created":1700000000,"model":"qwen3:8b","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":"","tool_calls":[{"id":"call_k2","index":0,"type":"function","function":{"name":"Bash","arguments":"{\"command\":\"pwd\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-77","object":"chat.completion.chunk","created":1700000000,"model":"qwen3:8b","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}

data: {"id":"chatcmpl-77","object":"chat.completion.chunk","created":1700000000,"model":"qwen3:8b","system_fingerprint":"fp_ollama","choices":[],"usage":{"prompt_tokens":42,"completion_tokens":17,"total_tokens":59}}

data: [DONE]

"""),
    completion=_completion(
        {
            "content": "",
            "tool_calls": [
                _call("call_k1", "Bash", '{"command":"ls -la"}'),
                _call("call_k2", "Bash", '{"command":"pwd"}'),
            ],
        },
        "stop",
        {"prompt_tokens": 42, "completion_tokens": 17},
    ),
    stop_reason="tool_use",
    usage=_usage(42, 17),
)

NAME_AND_ARGS_IN_ONE_CHUNK = Golden(
    name="name_and_args_in_one_chunk",
    stream=_sse(r"""
data: {"id":"chatcmpl-4","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_one","type":"function","function":{"name":"TodoWrite","arguments":"{\"todos\": [{\"content\": \"write tests\", \"status\": \"pending\"}]}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-4","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"id":"chatcmpl-4","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":25,"total_tokens":35}}

data: [DONE]

"""),
    completion=_completion(
        {
            "content": None,
            "tool_calls": [
                _call("call_one", "TodoWrite", '{"todos": [{"content": "write tests", "status": "pending"}]}')
            ],
        },
        "tool_calls",
        {"prompt_tokens": 10, "completion_tokens": 25},
    ),
    stop_reason="tool_use",
    usage=_usage(10, 25),
)

# Argument fragments that end inside an escape (`\` | `n`, `\u00` | `e9`) and text with multi-byte characters,
# so that splitting the bytes anywhere also cuts UTF-8 sequences.
ARGS_SPLIT_MID_UTF8_AND_ESCAPE = Golden(
    name="args_split_mid_utf8_and_escape",
    stream=_sse(r"""
data: {"id":"chatcmpl-5","choices":[{"index":0,"delta":{"role":"assistant","content":"Écriture du café ☕ 🎉"},"finish_reason":null}]}

data: {"id":"chatcmpl-5","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_w","type":"function","function":{"name":"Write","arguments":"{\"file_path\": \"/tmp/caf"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-5","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"é.txt\", \"content\": \"line 1\\"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-5","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"nline \\\"2\\\" \\u00"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-5","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"e9 \\ud83c\\udf89 日本語\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-5","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"id":"chatcmpl-5","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50}}

data: [DONE]

"""),
    completion=_completion(
        {
            "content": "Écriture du café ☕ 🎉",
            "tool_calls": [
                _call(
                    "call_w",
                    "Write",
                    '{"file_path": "/tmp/café.txt", "content": "line 1\\nline \\"2\\" \\u00e9 \\ud83c\\udf89 日本語"}',
                )
            ],
        },
        "tool_calls",
        {"prompt_tokens": 20, "completion_tokens": 30},
    ),
    stop_reason="tool_use",
    usage=_usage(20, 30),
)

# gpt-4o sometimes says "stop" after calling a tool: the client only runs tools on stop_reason tool_use.
STOP_WITH_TOOLS = Golden(
    name="stop_with_tools",
    stream=_sse(r"""
data: {"id":"chatcmpl-6","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_s","type":"function","function":{"name":"Bash","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-6","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\": \"make test\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-6","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"id":"chatcmpl-6","choices":[],"usage":{"prompt_tokens":15,"completion_tokens":9,"total_tokens":24}}

data: [DONE]

"""),
    completion=_completion(
        {"content": None, "tool_calls": [_call("call_s", "Bash", '{"command": "make test"}')]},
        "stop",
        {"prompt_tokens": 15, "completion_tokens": 9},
    ),
    stop_reason="tool_use",
    usage=_usage(15, 9),
)

# No finish_reason anywhere, but a proper [DONE]: null with tool calls means tool_use.
NO_FINISH_REASON = Golden(
    name="no_finish_reason",
    stream=_sse(r"""
data: {"id":"chatcmpl-7","choices":[{"index":0,"delta":{"role":"assistant","content":"Checking."}}]}

data: {"id":"chatcmpl-7","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_n","type":"function","function":{"name":"LS","arguments":"{\"path\": \".\"}"}}]}}]}

data: [DONE]

"""),
    completion=_completion(
        {"content": "Checking.", "tool_calls": [_call("call_n", "LS", '{"path": "."}')]},
        None,
    ),
    stop_reason="tool_use",
    usage=_usage(0, 0),
)

USAGE_ONLY_IN_EMPTY_CHOICES_CHUNK = Golden(
    name="usage_only_in_empty_choices_chunk",
    stream=_sse(r"""
data: {"id":"chatcmpl-8","choices":[{"index":0,"delta":{"role":"assistant","content":"Short answer."},"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-8","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null}

data: {"id":"chatcmpl-8","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":3,"total_tokens":1003,"prompt_tokens_details":{"cached_tokens":900},"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]

"""),
    completion=_completion(
        {"content": "Short answer."},
        "length",
        {"prompt_tokens": 1000, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 900}},
    ),
    stop_reason="max_tokens",
    usage=_usage(100, 3, cached=900),
)

# Usage in every chunk (cumulative), `null` in some; the last non-empty one counts. `data:` without a space.
USAGE_IN_EVERY_CHUNK = Golden(
    name="usage_in_every_chunk",
    stream=_sse(r"""
data:{"id":"chatcmpl-9","choices":[{"index":0,"delta":{"role":"assistant","content":"One"},"finish_reason":null}],"usage":{"prompt_tokens":50,"completion_tokens":1,"total_tokens":51}}

data:{"id":"chatcmpl-9","choices":[{"index":0,"delta":{"content":" two"},"finish_reason":null}],"usage":{"prompt_tokens":50,"completion_tokens":2,"total_tokens":52}}

data:{"id":"chatcmpl-9","choices":[{"index":0,"delta":{"content":" three"},"finish_reason":null}],"usage":null}

data:{"id":"chatcmpl-9","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":50,"completion_tokens":3,"total_tokens":53}}

data:{"id":"chatcmpl-9","choices":[],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}

data:[DONE]

"""),
    completion=_completion({"content": "One two three"}, "stop", {"prompt_tokens": 50, "completion_tokens": 3}),
    stop_reason="end_turn",
    usage=_usage(50, 3),
)

# The last text, the finish_reason and the usage all in one chunk; CRLF line ends.
CONTENT_AND_FINISH_IN_ONE_CHUNK = Golden(
    name="content_and_finish_in_one_chunk",
    stream=_sse(
        r"""
data: {"id":"chatcmpl-10","choices":[{"index":0,"delta":{"role":"assistant","content":"All "},"finish_reason":null}]}

data: {"id":"chatcmpl-10","choices":[{"index":0,"delta":{"content":"done."},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}

data: [DONE]

""",
        crlf=True,
    ),
    completion=_completion({"content": "All done."}, "stop", {"prompt_tokens": 7, "completion_tokens": 2}),
    stop_reason="end_turn",
    usage=_usage(7, 2),
)

WHITESPACE_BEFORE_TOOL = Golden(
    name="whitespace_before_tool",
    stream=_sse(r"""
data: {"id":"chatcmpl-11","choices":[{"index":0,"delta":{"role":"assistant","content":"\n\n"},"finish_reason":null}]}

data: {"id":"chatcmpl-11","choices":[{"index":0,"delta":{"content":" "},"finish_reason":null}]}

data: {"id":"chatcmpl-11","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_ws","type":"function","function":{"name":"Read","arguments":"{\"file_path\": \"/a\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-11","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":9,"completion_tokens":8,"total_tokens":17}}

data: [DONE]

"""),
    completion=_completion(
        {"content": "\n\n ", "tool_calls": [_call("call_ws", "Read", '{"file_path": "/a"}')]},
        "tool_calls",
        {"prompt_tokens": 9, "completion_tokens": 8},
    ),
    stop_reason="tool_use",
    usage=_usage(9, 8),
)

MID_STREAM_ERROR = Golden(
    name="mid_stream_error",
    stream=_sse(r"""
data: {"id":"chatcmpl-12","choices":[{"index":0,"delta":{"role":"assistant","content":"Partial"},"finish_reason":null}]}

data: {"id":"chatcmpl-12","choices":[{"index":0,"delta":{"content":" answer"},"finish_reason":null}]}

data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}

data: [DONE]

"""),
    error_type="api_error",
    partial_content=[{"type": "text", "text": "Partial answer"}],
)

# The provider closes the connection after the finish_reason and usage without sending [DONE].
EOF_WITHOUT_DONE = Golden(
    name="eof_without_done",
    stream=_sse(r"""
data: {"id":"chatcmpl-13","choices":[{"index":0,"delta":{"role":"assistant","content":"Bye."},"finish_reason":null}]}

data: {"id":"chatcmpl-13","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"id":"chatcmpl-13","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}

"""),
    completion=_completion({"content": "Bye."}, "stop", {"prompt_tokens": 3, "completion_tokens": 2}),
    stop_reason="end_turn",
    usage=_usage(3, 2),
    ends_with_done=False,
)

GOLDEN = [
    TEXT_ONLY,
    THINKING_THEN_TEXT,
    THINKING_THEN_TOOL,
    TEXT_THEN_TWO_TOOLS,
    INTERLEAVED_TOOL_INDICES,
    OLLAMA_STYLE,
    NAME_AND_ARGS_IN_ONE_CHUNK,
    ARGS_SPLIT_MID_UTF8_AND_ESCAPE,
    STOP_WITH_TOOLS,
    NO_FINISH_REASON,
    USAGE_ONLY_IN_EMPTY_CHOICES_CHUNK,
    USAGE_IN_EVERY_CHUNK,
    CONTENT_AND_FINISH_IN_ONE_CHUNK,
    WHITESPACE_BEFORE_TOOL,
    MID_STREAM_ERROR,
    EOF_WITHOUT_DONE,
]
