"""Property-based tests (hypothesis): the pure translation code and the running balancer, fed valid-ish and
garbage input.

Every `@settings` here is `derandomize=True` (the same examples on every run, so CI is reproducible) with
`database=None` and `deadline=None`; example counts keep the whole file well under a minute on two cores.
`FUZZ_SCALE=20 pytest tests/test_fuzz.py` fuzzes 20 times longer with random seeds (to look for new bugs).

What these properties found is pinned at the end of the file as plain regression tests (one per minimal failing
input). A bug found while it is still open is pinned as an `xfail(strict=True)` test (`BUG: ...`), so that the property
keeps guarding everything else; the fix makes it XPASS, which fails the run until the marker goes.
"""

from __future__ import annotations

import base64
import collections
import copy
import json
import os
import re
import struct
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from addon.affinity import session_key
from addon.config import ConfigError, ProviderConfig, parse_config
from addon.errors import MAX_MESSAGE_CHARS
from addon.openai_errors import to_anthropic_error
from addon.openai_request import OpenAIOptions, ToolNames, to_openai_request
from addon.openai_response import OpenAIResponseError, to_anthropic_message
from addon.openai_stream import StreamTranslator
from addon.sse import SSESplitter
from addon.token_count import count_input_tokens
from fakes import Behavior, FakeProvider, _Handler
from helpers import (
    STOP_REASONS,
    anthropic_message,
    anthropic_provider,
    anthropic_stream_events,
    assert_stream_grammar,
    openai_provider,
    parse_sse,
    sse,
)

SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# The huge strings some examples hold make hypothesis warn about the size of their repr; nothing else.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


# FUZZ_SCALE=20 (say) runs 20 times the examples, with a fresh random seed each run: deeper fuzzing by hand.
FUZZ_SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples * FUZZ_SCALE,
        deadline=None,
        derandomize=FUZZ_SCALE == 1,
        database=None,
        suppress_health_check=SUPPRESSED,
        print_blob=True,
    )


# Deep enough to exhaust the JSON/YAML parsers' recursion limits on every Python version (3.11: ~1000 levels;
# 3.12+: the C stack limit, several thousand).
DEEP = 100_000

# =============================================================================================================
# strategies: JSON junk
# =============================================================================================================

ODD_STRINGS = [
    "", " ", "\n", "\t\r\n ", "\x00", "\x7f", "\ud800", "\udfff", "\ud83d", "\udcff", "💥", "🙂" * 3, "ǅ", "İ",
    "\u2028", "\u2029", "\ufeff", "²", "١٢٣", "０", "{", "}", "[", "]", '{"a":', '"', "\\", "null", "true", "0",
    "-1", "1e999", "NaN", "[DONE]", "data: x", "event: error", ":", "\r\n\r\n", "msg_", "toolu_", "call_1",
    "openai-translated.", "openai-translated.abc", "x" * 70, "mcp__server__" + "t" * 70, "bad name!", "a b",
    "opus", "sonnet", "haiku", "claude-sonnet-4", "claude-3-5-haiku", "gpt-4o", "${HOME}", "${NOPE}",
    "${X:-d}", "passthrough", "<html><body>502 Bad Gateway</body></html>", "prompt is too long",
    "maximum context length is 8192 tokens, however you requested 9000 tokens (9000 in the messages)",
    "context_length_exceeded", "overloaded", "Overloaded", "rate limit", "timeout", "auto", "any", "none", "tool",
    "enabled", "adaptive", "disabled", "base64", "url", "text", "content", "file", "image/png", "application/pdf",
    "user", "assistant", "system", "tool_use", "tool_result", "thinking",
]
HUGE_STRINGS = ["x" * 20_000, "🙂" * 3_000, "a " * 8_000, "{" * 3_000, "\n" * 3_000]



def _same(value: Any) -> Any:
    return value


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """`one_of` with weights. (Repeating a branch in `one_of` does not weight it: identical branches are merged;
    `.map(_same)` makes each copy a distinct strategy.)"""
    return st.one_of(*[strategy.map(_same) for weight, strategy in choices for _ in range(weight)])


odd_text = weighted(
    (2, st.text(max_size=30)),
    (1, st.sampled_from(ODD_STRINGS)),
    (1, st.text(st.characters(categories=["Cs", "Cc", "Zs", "Zl", "So", "Nd", "No", "Mn"]), max_size=8)),
)
texts = weighted((6, odd_text), (1, st.sampled_from(HUGE_STRINGS)))

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
ALL_KEYS = [
    "type", "text", "role", "content", "model", "messages", "system", "tools", "tool_choice", "name", "id",
    "input", "input_schema", "tool_use_id", "is_error", "source", "data", "media_type", "url", "title",
    "thinking", "signature", "budget_tokens", "metadata", "user_id", "session_id", "stream", "max_tokens",
    "temperature", "top_p", "top_k", "stop_sequences", "cache_control", "description", "effort", "output_config",
    "disable_parallel_tool_use", "citations", "error", "message", "code", "detail", "choices", "delta",
    "finish_reason", "usage", "index", "function", "arguments", "tool_calls", "reasoning_content",
]
json_keys = st.one_of(st.sampled_from(ALL_KEYS), odd_text)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(json_keys, inner, max_size=4)),
    max_leaves=10,
)
json_objects = st.dictionaries(json_keys, json_values, max_size=5)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the real shape, sometimes (1 in 8) anything at all."""
    return weighted((7, strategy), (1, json_values))


# =============================================================================================================
# strategies: Anthropic request bodies
# =============================================================================================================

MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "claude-3-5-haiku-latest", "gpt-4o", "m", ""]
TOOL_NAMES = ["Read", "Bash", "Edit", "mcp__plugin_github_enterprise_server__search_repositories_by_topic_and_language",
              "bad name!", "a.b", "x" * 64, "x" * 65, ""]
TOOL_IDS = ["toolu_01", "toolu_02", "call_1", "", "a b", "toolu_01"]

tool_names = weighted((3, st.sampled_from(TOOL_NAMES)), (1, odd_text))
tool_ids = weighted((3, st.sampled_from(TOOL_IDS)), (1, odd_text))
cache_control = st.fixed_dictionaries({"type": st.just("ephemeral")}, optional={"ttl": st.sampled_from(["5m", "1h"])})


def _png(width: int, height: int) -> str:
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + struct.pack(">II", width, height)).decode()


def _gif(width: int, height: int) -> str:
    return base64.b64encode(b"GIF89a" + struct.pack("<HH", width, height)).decode()


def _jpeg(width: int, height: int, junk: bytes) -> str:
    sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03" + b"\x00" * 9
    return base64.b64encode(b"\xff\xd8" + junk + sof).decode()


sizes = st.integers(min_value=0, max_value=2**16 - 1)
image_data = st.one_of(
    st.builds(_png, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(_gif, sizes, sizes),
    st.builds(_jpeg, sizes, sizes, st.binary(max_size=12)),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    odd_text,
)
image_source = st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": maybe(st.sampled_from(["image/png", "image/jpeg"])),
                           "data": maybe(image_data)}),
    st.fixed_dictionaries({"type": st.just("url"), "url": maybe(st.just("https://example.com/a.png"))}),
    st.fixed_dictionaries({"type": st.just("file"), "file_id": odd_text}),
)
text_block = st.fixed_dictionaries(
    {"type": st.just("text"), "text": maybe(texts)}, optional={"cache_control": cache_control, "citations": json_values}
)
image_block = st.fixed_dictionaries({"type": st.just("image"), "source": maybe(image_source)},
                                    optional={"cache_control": cache_control})
document_block = st.fixed_dictionaries(
    {
        "type": st.just("document"),
        "source": maybe(st.one_of(
            st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.just("application/pdf"),
                                   "data": maybe(image_data)}),
            st.fixed_dictionaries({"type": st.just("text"), "media_type": st.just("text/plain"), "data": maybe(texts)}),
            st.fixed_dictionaries({"type": st.just("content"), "content": maybe(st.lists(text_block, max_size=3))}),
            st.fixed_dictionaries({"type": st.just("url"), "url": odd_text}),
        )),
    },
    optional={"title": maybe(odd_text), "context": odd_text, "citations": json_values},
)
tool_use_block = st.fixed_dictionaries(
    {"type": st.sampled_from(["tool_use", "tool_use", "server_tool_use"]), "id": maybe(tool_ids),
     "name": maybe(tool_names), "input": maybe(json_objects)},
    optional={"cache_control": cache_control},
)
tool_result_block = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": maybe(tool_ids),
     "content": maybe(st.one_of(texts, st.lists(st.one_of(text_block, image_block, document_block), max_size=3)))},
    optional={"is_error": maybe(st.booleans()), "cache_control": cache_control},
)
thinking_block = st.one_of(
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": maybe(texts),
                           "signature": maybe(st.one_of(odd_text, st.just("openai-translated.0123abcd")))}),
    st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": maybe(odd_text)}),
)
other_block = st.one_of(
    st.fixed_dictionaries({"type": st.just("search_result"), "source": odd_text, "title": maybe(odd_text),
                           "content": maybe(st.lists(text_block, max_size=2))}),
    st.fixed_dictionaries({"type": st.just("web_search_tool_result"), "tool_use_id": tool_ids,
                           "content": json_values}),
    st.fixed_dictionaries({"type": odd_text}, optional={"text": odd_text, "content": json_values}),
)
content_block = weighted(
    (3, text_block), (1, image_block), (1, document_block), (2, tool_use_block), (2, tool_result_block),
    (1, thinking_block), (1, other_block),
)
messages_content = st.one_of(texts, st.lists(content_block, max_size=5))
message = st.fixed_dictionaries(
    {"role": maybe(st.sampled_from(["user", "assistant", "user", "assistant", "system"])),
     "content": maybe(messages_content)}
)
ROUND_IDS = ["toolu_a", "toolu_b", "toolu_c", "call_1", ""]


@st.composite
def conversations(draw: st.DrawFn) -> list[dict]:
    """Claude Code-like conversations: text turns, tool rounds (calls answered in any order, some not at all,
    some results without a call), mid-conversation system messages, images and documents."""
    out: list[dict] = []
    for _ in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(["user", "assistant", "round", "round", "round", "system", "blocks"]))
        if kind == "round":
            ids = draw(st.lists(st.sampled_from(ROUND_IDS), min_size=1, max_size=3))
            calls = [{"type": "tool_use", "id": i, "name": draw(tool_names), "input": draw(json_objects)} for i in ids]
            before = draw(st.lists(st.one_of(thinking_block, text_block), max_size=2))
            out.append({"role": "assistant", "content": before + calls})
            answered = draw(st.permutations(ids))[: draw(st.integers(0, len(ids)))]
            answered += draw(st.lists(st.sampled_from(ROUND_IDS), max_size=1))  # a result for no call
            results = [draw(tool_result_block) | {"tool_use_id": i} for i in answered]
            after = draw(st.lists(st.one_of(text_block, image_block, document_block), max_size=2))
            if results or after or draw(st.booleans()):
                out.append({"role": "user", "content": results + after if draw(st.booleans()) else after + results})
        elif kind == "blocks":
            out.append(draw(message))
        else:
            content = draw(st.one_of(texts, st.lists(text_block, max_size=2)))
            out.append({"role": kind, "content": content})
    return out


system_prompt = st.one_of(texts, st.lists(weighted((2, text_block), (1, other_block)), max_size=3))
tool_definition = st.one_of(
    st.fixed_dictionaries(
        {"name": maybe(tool_names), "input_schema": maybe(st.one_of(
            st.just({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            json_objects,
        ))},
        optional={"description": maybe(texts), "type": st.just("custom"), "cache_control": cache_control},
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["bash_20250124", "text_editor_20250124", "text_editor_20250728",
                                  "web_search_20250305", "computer_20250124", "memory_20250818", "x"]),
         "name": maybe(st.sampled_from(["bash", "str_replace_based_edit_tool", "web_search", "computer", "memory"]))},
        optional={"max_uses": json_leaves},
    ),
)
tool_choice = st.fixed_dictionaries(
    {"type": maybe(st.sampled_from(["auto", "any", "none", "tool"]))},
    optional={"name": maybe(tool_names), "disable_parallel_tool_use": maybe(st.booleans())},
)
user_ids = st.one_of(
    odd_text,
    st.builds(lambda s: json.dumps({"device_id": "d", "account_uuid": "", "session_id": s}), odd_text),
    st.builds(lambda s: f"user_abc_account__session_{s}", st.sampled_from(["0f0e-1234-abcd", "zz", ""])),
)
thinking_config = st.one_of(
    st.fixed_dictionaries({"type": st.just("enabled"), "budget_tokens": maybe(st.integers(-10, 100_000))}),
    st.fixed_dictionaries({"type": st.sampled_from(["adaptive", "disabled"])}),
)
valid_ish_bodies = st.fixed_dictionaries(
    {"model": maybe(st.sampled_from(MODELS)),
     "messages": maybe(weighted((2, conversations()), (1, st.lists(message, max_size=6))))},
    optional={
        "max_tokens": maybe(st.integers(-5, 2**40)),
        "system": maybe(system_prompt),
        "tools": maybe(st.lists(tool_definition, max_size=4)),
        "tool_choice": maybe(tool_choice),
        "metadata": maybe(st.fixed_dictionaries({"user_id": maybe(user_ids)})),
        "thinking": maybe(thinking_config),
        "output_config": maybe(st.fixed_dictionaries({"effort": maybe(st.sampled_from(["low", "max", "xhigh", "?"]))})),
        "stream": maybe(st.booleans()),
        "temperature": maybe(st.floats(0, 1)),
        "top_p": maybe(st.floats(0, 1)),
        "top_k": json_leaves,
        "stop_sequences": maybe(st.lists(odd_text, max_size=6)),
        "context_management": json_values,
        "mcp_servers": json_values,
        "container": json_values,
        "service_tier": json_values,
    },
)


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every position inside a JSON value (dict keys and list indices), the root excluded."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, inner in items:
        out.append((*path, key))
        out.extend(_paths(inner, (*path, key)))
    return out


def _get(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


JUNK = st.one_of(
    json_values,
    st.sampled_from([None, {}, [], "", 0, True, [None], [[]], {"type": None}, "x" * 100_000]),
    st.just([[[[[[[[[[{}]]]]]]]]]]),
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy) -> Any:
    """A valid-ish value with a few positions replaced by junk, removed, wrapped or turned into the wrong type."""
    value = copy.deepcopy(draw(base))  # never change a value a strategy may hand out again (st.just, sampled_from)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(value)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _get(value, path[:-1]), path[-1]
        operation = draw(st.sampled_from(["junk", "junk", "delete", "wrap", "unwrap", "none", "stringify"]))
        if operation == "delete":
            del parent[key]
        elif operation == "wrap":
            parent[key] = [parent[key]] if draw(st.booleans()) else {"type": parent[key]}
        elif operation == "unwrap" and isinstance(parent[key], (list, dict)) and parent[key]:
            inner = parent[key]
            parent[key] = inner[0] if isinstance(inner, list) else next(iter(inner.values()))
        elif operation == "none":
            parent[key] = None
        elif operation == "stringify":
            parent[key] = json.dumps(parent[key], ensure_ascii=False, default=str)
        else:
            parent[key] = copy.deepcopy(draw(JUNK))
    return value


bodies_with_tools = st.builds(
    lambda body, tools, choice: {**body, "tools": tools, "tool_choice": choice},
    valid_ish_bodies, st.lists(tool_definition, min_size=1, max_size=4), tool_choice,
)
anthropic_bodies = weighted(
    (2, valid_ish_bodies), (1, bodies_with_tools), (1, mutated(valid_ish_bodies)), (1, mutated(bodies_with_tools)),
    (1, json_objects),
)
openai_options = st.builds(
    OpenAIOptions,
    max_tokens_cap=st.one_of(st.none(), st.integers(1, 10_000)),
    stream_options=st.booleans(),
    reasoning=st.sampled_from(["none", "reasoning_effort", "openrouter", "deepseek"]),
    merge_system_messages=st.booleans(),
)


def strict_json(value: Any) -> bool:
    """Whether a value is standard JSON (no NaN/Infinity) and UTF-8 encodable."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except (ValueError, UnicodeEncodeError, RecursionError):
        return False
    return True


# =============================================================================================================
# 1. pure code
# =============================================================================================================

OPENAI_TOP_LEVEL = {
    "model", "messages", "max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice",
    "parallel_tool_calls", "user", "stream", "stream_options", "reasoning_effort", "reasoning", "thinking",
}
VALID_OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def assert_openai_request(out: dict, names: ToolNames, body: dict, options: OpenAIOptions) -> None:
    assert set(out) <= OPENAI_TOP_LEVEL, set(out) - OPENAI_TOP_LEVEL
    json.dumps(out)  # JSON-serializable (with ensure_ascii, as the standard library does by default)
    if strict_json(body):
        json.dumps(out, allow_nan=False)
    assert out["model"] == "gpt-x"
    if "max_tokens" in out:
        assert isinstance(out["max_tokens"], int)
        if options.max_tokens_cap is not None:
            assert out["max_tokens"] <= options.max_tokens_cap
    assert len(out.get("stop", [])) <= 4
    offered = set()
    for tool in out.get("tools", []):
        name = tool["function"]["name"]
        assert tool["type"] == "function" and VALID_OPENAI_NAME.match(name), tool
        assert isinstance(tool["function"]["parameters"], dict)
        offered.add(name)
    choice = out.get("tool_choice")
    if isinstance(choice, dict):
        assert choice["function"]["name"] in offered
    # The conversation: roles OpenAI knows; every tool call answered right after its assistant message, and no
    # tool message without its call; no two consecutive user or assistant messages.
    previous_role = None
    pending: list[str] | None = None
    for item in out["messages"]:
        role = item["role"]
        assert role in ("system", "user", "assistant", "tool"), item
        if role == "tool":
            assert pending is not None and item["tool_call_id"] in pending, (item, pending)
            pending.remove(item["tool_call_id"])
            assert isinstance(item["content"], str)
        else:
            assert not pending, f"unanswered tool calls {pending} before a {role} message"
            assert not (role == previous_role and role in ("user", "assistant")), f"two {role} messages in a row"
            pending = None
        if role == "assistant":
            assert item["content"] is None or isinstance(item["content"], str)
            calls = item.get("tool_calls") or []
            assert item["content"] or calls, "an empty assistant message"
            pending = [call["id"] for call in calls]
            for call in calls:
                assert isinstance(call["function"]["arguments"], str)
                json.loads(call["function"]["arguments"])
        if role == "user":
            assert item["content"], "an empty user message"
            assert isinstance(item["content"], (str, list))
        previous_role = role
    assert not pending, f"unanswered tool calls {pending} at the end"


@fuzz_settings(400)
@given(body=anthropic_bodies, options=openai_options)
def test_to_openai_request_never_raises(body, options):
    out, names = to_openai_request(body, "gpt-x", options)
    assert_openai_request(out, names, body, options)
    # tool renames are reversible
    for original, short in names.to_openai.items():
        assert names.original(short) == original


@fuzz_settings(300)
@given(body=anthropic_bodies)
def test_count_input_tokens_is_a_non_negative_int(body):
    tokens = count_input_tokens(body)
    assert isinstance(tokens, int) and not isinstance(tokens, bool)
    assert tokens >= 0


header_pairs = st.lists(
    st.tuples(st.sampled_from(["x-api-key", "Authorization", "X-API-KEY", "content-type", "anthropic-version"]),
              odd_text),
    max_size=3,
)


@fuzz_settings(300)
@given(body=st.one_of(anthropic_bodies, st.none(), json_values), headers=header_pairs)
def test_session_key_never_raises(body, headers):
    key = session_key(body, headers)
    assert key is None or (isinstance(key, str) and key.split(":", 1)[0] in ("session", "user", "client"))


def _has_surrogates(value: Any) -> bool:
    return "\\ud" in json.dumps(value, default=str).lower()


def _error_json(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogatepass")


OVERFLOW_TEMPLATES = [
    "This model's maximum context length is {limit} tokens. However, your messages resulted in {prompt} tokens.",
    "This model's maximum context length is {limit} tokens. However, you requested {total} tokens ({prompt} in the "
    "messages, {completion} in the completion). Please reduce the length of the messages or completion.",
    "prompt is too long: {prompt} tokens > {limit} maximum",
    "Input length {prompt} exceeds the maximum context length of {limit} tokens",
    "context window of {limit} tokens exceeded: request has {prompt} input tokens",
    "max_tokens is too large: {completion}. This model's maximum context length is {limit} tokens",
    "The input ({prompt} tokens) is longer than the model's context length ({limit} tokens).",
    "too many tokens",
]
token_numbers = st.one_of(st.integers(0, 10**7).map(str), st.integers(0, 10**7).map("{:,}".format), odd_text)
overflow_messages = st.builds(
    lambda template, limit, prompt, completion: template.format(limit=limit, prompt=prompt, completion=completion,
                                                                total=f"{prompt}+{completion}"),
    st.sampled_from(OVERFLOW_TEMPLATES), token_numbers, token_numbers, token_numbers,
)
error_bodies = st.one_of(
    st.binary(max_size=200),
    overflow_messages.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.builds(lambda m, c: _error_json(error={"message": m, "type": "invalid_request_error", "code": c}),
              overflow_messages, st.sampled_from([None, "context_length_exceeded", 400, "400"])),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda m, t, c: _error_json(error={"message": m, "type": t, "code": c}),
              maybe(texts), maybe(odd_text), maybe(st.one_of(odd_text, st.integers(0, 1000)))),
    st.builds(lambda m, c: _error_json(object="error", message=m, code=c), maybe(texts), maybe(st.integers(0, 600))),
    st.builds(lambda m: _error_json(error=m), maybe(texts)),
    st.builds(lambda d: _error_json(detail=d), maybe(st.one_of(
        texts, st.lists(st.fixed_dictionaries({"loc": maybe(st.lists(json_leaves, max_size=3)), "msg": maybe(texts)}),
                        max_size=3)))),
    st.builds(lambda m: _error_json(message=m), maybe(texts)),
    st.builds(lambda t: t.encode("utf-8", "surrogatepass"), texts),
    st.sampled_from([
        b"", b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"\xff\xfe", b"[]", b"[[]]", b"null", b'"x"',
        b'{"error": {"code": 429, "message": "Provider returned error", "metadata": {"raw": "overloaded"}}}',
        b"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        b'{"error": {"message": "input length 100 tokens plus max_tokens 9000 exceeds the context limit of 8192 '
        b'tokens (100 in the messages, 9000 in the completion)"}}',
    ]),
)
statuses = st.one_of(st.integers(100, 599), st.sampled_from([200, 400, 401, 402, 403, 404, 408, 413, 422, 429,
                                                             500, 502, 503, 504, 529]))


@fuzz_settings(400)
@given(status=statuses, body=error_bodies)
def test_to_anthropic_error_always_gives_an_anthropic_error(status, body):
    client_status, out = to_anthropic_error(status, body)
    assert isinstance(client_status, int) and 400 <= client_status <= 599
    data = json.loads(out)
    assert set(data) == {"type", "error"} and data["type"] == "error"
    assert set(data["error"]) == {"type", "message"}
    assert data["error"]["type"] in {
        "invalid_request_error", "authentication_error", "billing_error", "permission_error", "not_found_error",
        "request_too_large", "rate_limit_error", "api_error", "overloaded_error", "timeout_error",
    }
    assert isinstance(data["error"]["message"], str) and data["error"]["message"]
    assert len(data["error"]["message"]) <= MAX_MESSAGE_CHARS


tool_call = st.fixed_dictionaries(
    {"id": maybe(tool_ids), "type": st.just("function"),
     "function": maybe(st.fixed_dictionaries(
         {"name": maybe(tool_names),
          "arguments": maybe(st.one_of(
              st.builds(json.dumps, json_objects), st.builds(lambda o: json.dumps(json.dumps(o)), json_objects),
              odd_text, json_objects))},
     ))},
)
openai_message = st.fixed_dictionaries(
    {"role": st.just("assistant")},
    optional={
        "content": maybe(st.one_of(texts, st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                          "text": maybe(texts)}), max_size=3))),
        "reasoning_content": maybe(texts),
        "reasoning": maybe(texts),
        "reasoning_details": maybe(st.lists(st.fixed_dictionaries(
            {"type": st.sampled_from(["reasoning.text", "reasoning.summary"]), "text": maybe(texts),
             "summary": maybe(texts)}), max_size=2)),
        "tool_calls": maybe(st.lists(tool_call, max_size=3)),
        "function_call": maybe(st.fixed_dictionaries({"name": maybe(tool_names), "arguments": maybe(odd_text)})),
        "refusal": maybe(texts),
    },
)
usage = st.fixed_dictionaries(
    {},
    optional={"prompt_tokens": maybe(st.integers(-5, 10**9)), "completion_tokens": maybe(st.integers(-5, 10**9)),
              "prompt_tokens_details": maybe(st.fixed_dictionaries({"cached_tokens": maybe(st.integers(-5, 10**9))})),
              "prompt_cache_hit_tokens": maybe(st.integers(0, 100))},
)
completion = st.fixed_dictionaries(
    {"choices": maybe(st.lists(st.fixed_dictionaries(
        {"index": st.just(0), "message": maybe(openai_message),
         "finish_reason": maybe(st.sampled_from(["stop", "length", "tool_calls", "content_filter", "eos", "error"]))},
        optional={"stop_reason": maybe(odd_text)},
    ), max_size=2))},
    optional={"id": maybe(odd_text), "usage": maybe(usage), "object": st.just("chat.completion"),
              "error": maybe(st.one_of(odd_text, json_objects))},
)


@fuzz_settings(400)
@given(body=weighted((3, completion), (2, mutated(completion)), (1, json_objects)),
       names=st.sampled_from([ToolNames(), ToolNames(to_openai={"a b": "a_b_1"}, to_anthropic={"a_b_1": "a b"})]))
def test_to_anthropic_message_raises_only_response_errors(body, names):
    try:
        message = to_anthropic_message(body, "claude-sonnet-4-5", names)
    except OpenAIResponseError:
        return
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "claude-sonnet-4-5"
    assert message["stop_reason"] in STOP_REASONS
    assert re.fullmatch(r"msg_[A-Za-z0-9_-]*", message["id"])
    for block in message["content"]:
        assert block["type"] in ("thinking", "text", "tool_use")
        if block["type"] == "tool_use":
            assert isinstance(block["input"], dict) and re.fullmatch(r"[A-Za-z0-9_-]+", block["id"])
        if block["type"] == "text":
            assert isinstance(block["text"], str) and block["text"]
    assert all(isinstance(v, int) and v >= 0 for v in message["usage"].values())
    json.dumps(message)
    if message["stop_reason"] == "tool_use":
        assert any(block["type"] == "tool_use" for block in message["content"])


# -- the stream translator --------------------------------------------------------------------------------------

_TOOL_ID = re.compile(r'"toolu_[0-9a-f]{24}"')


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


stream_delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant"),
        "content": maybe(st.one_of(odd_text, st.sampled_from([" ", "\n", "Hello", ""]))),
        "reasoning_content": maybe(odd_text),
        "reasoning": maybe(odd_text),
        "refusal": maybe(odd_text),
        "tool_calls": maybe(st.lists(st.fixed_dictionaries(
            {},
            optional={
                "index": maybe(st.integers(0, 2)), "id": maybe(tool_ids), "type": st.just("function"),
                "function": maybe(st.fixed_dictionaries({}, optional={
                    "name": maybe(tool_names),
                    "arguments": maybe(st.sampled_from(['{"a"', ': 1', "}", '{"p": "x\\', '"}', "[1", "]", '"{\\"a\\": 1}"',
                                                        "", " ", "{}", "nul", "l", '{"s": "}"}']) | odd_text),
                })),
            },
        ), max_size=2)),
        "function_call": maybe(st.fixed_dictionaries({}, optional={"name": tool_names, "arguments": odd_text})),
    },
)
normal_chunk = st.fixed_dictionaries(
    {"choices": maybe(st.lists(st.fixed_dictionaries(
        {"index": maybe(st.sampled_from([0, 0, 0, 1])), "delta": maybe(stream_delta)},
        optional={"finish_reason": maybe(st.sampled_from([None, None, "stop", "length", "tool_calls", "error"])),
                  "stop_reason": maybe(odd_text)},
    ), max_size=2))},
    optional={"id": maybe(st.sampled_from(["chatcmpl-1", "chatcmpl-1", "x y"])), "usage": maybe(usage),
              "object": st.just("chat.completion.chunk")},
)
stream_chunk = weighted(
    (20, normal_chunk),
    (1, st.fixed_dictionaries({"error": maybe(st.fixed_dictionaries(
        {"message": maybe(odd_text), "type": maybe(odd_text), "code": maybe(odd_text)}))})),
    (1, json_values),
)


@st.composite
def openai_stream_bytes(draw: st.DrawFn) -> bytes:
    """A provider's stream: JSON chunks in `data: ...` framing, with the framings real servers use, and junk."""
    out = []
    eol = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["data"] * 12 + ["nospace", "bare", "comment", "multiline", "done", "junk",
                                                     "event"]))
        payload = json.dumps(draw(stream_chunk), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        if kind == "data":
            out.append(b"data: " + payload + eol + eol)
        elif kind == "nospace":
            out.append(b"data:" + payload + eol)
        elif kind == "bare":
            out.append(payload + eol)
        elif kind == "comment":
            out.append(b": keep-alive" + eol + eol)
        elif kind == "multiline":
            half = len(payload) // 2
            out.append(b"data: " + payload[:half] + eol + b"data: " + payload[half:] + eol + eol)
        elif kind == "done":
            out.append(b"data: [DONE]" + eol + eol)
        elif kind == "event":
            out.append(b"event: " + draw(st.sampled_from([b"error", b"message", b"x"])) + eol)
        else:
            out.append(draw(st.binary(max_size=30)))
    if draw(st.booleans()):
        out.append(b"data: [DONE]" + eol + eol)
    return b"".join(out)


def translate_all(pieces: list[bytes], names: ToolNames) -> tuple[bytes, list[bytes]]:
    translator = StreamTranslator("claude-sonnet-4-5", names, message_id="msg_fuzz")
    outputs = []
    for piece in pieces:
        was_done = translator.done
        output = translator.feed(piece)
        if was_done:
            assert output == b"", "output after the stream had ended"
        outputs.append(output)
    outputs.append(translator.finish())
    assert translator.done
    assert translator.feed(b"data: [DONE]\n\n") == b"" and translator.finish() == b""
    return b"".join(outputs), outputs


def _normalized(events: list[tuple[str, Any]]) -> str:
    return _TOOL_ID.sub('"toolu_RANDOM"', json.dumps(events))


stream_names = st.sampled_from([ToolNames(), ToolNames(to_openai={"a b": "a_b_1"}, to_anthropic={"a_b_1": "a b"})])


@fuzz_settings(300)
@given(stream=openai_stream_bytes(), cuts=st.lists(st.integers(0, 10**6), max_size=8), names=stream_names)
def test_stream_translator_json_chunks_split_anywhere(stream, cuts, names):
    whole, _ = translate_all([stream], names)
    split, outputs = translate_all(_split(stream, cuts), names)
    events = parse_sse(split)
    assert_stream_grammar(events, finished=True)
    for output in outputs:  # every piece of output is whole events
        parse_sse(output)
    assert _normalized(parse_sse(whole)) == _normalized(events), "the output depends on how the input was split"


@fuzz_settings(200)
@given(stream=st.binary(max_size=300), cuts=st.lists(st.integers(0, 10**6), max_size=6), names=stream_names)
def test_stream_translator_random_bytes(stream, cuts, names):
    output, outputs = translate_all(_split(stream, cuts), names)
    assert_stream_grammar(parse_sse(output), finished=True)
    for piece in outputs:
        parse_sse(piece)


# -- SSE splitting ------------------------------------------------------------------------------------------------

sse_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b"\r\r", b"data: x", b"event: e",
                              b":c", b"data:", b"\xe2\x82", b"\xac", b"\xff", b"id: 1", b" ", b"{}"]),
             max_size=30).map(b"".join),
)


@fuzz_settings(300)
@given(data=sse_bytes, cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_sse_splitter_gives_the_same_events_however_the_bytes_are_split(data, cuts):
    whole = SSESplitter()
    expected = whole.feed(data)
    split = SSESplitter()
    events = [event for piece in _split(data, cuts) for event in split.feed(piece)]
    assert [(e.event, e.data, e.raw) for e in events] == [(e.event, e.data, e.raw) for e in expected]
    assert split.pending() == whole.pending()


# -- the providers file ---------------------------------------------------------------------------------------------

ENVIRON = {"KEY": "k-123", "EMPTY": "", "URL": "http://127.0.0.1:9"}
config_scalars = st.one_of(
    st.sampled_from(["x", "anthropic", "openai", "api_key", "auth_token", "passthrough", "http://127.0.0.1:9",
                     "https://example.com/api", "ftp://nope", "http://", "http://[::1", "http://a:99999",
                     "http://u:p@h/", "${KEY}", "${NOPE}", "${NOPE:-d}", "${EMPTY:-x}", "${URL}", "priority",
                     "round_robin", "weighted", "least_latency", "DEBUG", "info", "session", "none", "local", ""]),
    st.integers(-3, 100_000), st.floats(allow_nan=True), st.booleans(), st.none(), odd_text,
)
config_keys = st.one_of(st.sampled_from([
    "name", "type", "base_url", "auth_type", "auth_value", "big_model", "small_model", "enabled", "proxy",
    "priority", "weight", "extra_headers", "max_tokens_cap", "stream_options", "reasoning", "merge_system_messages",
]), odd_text)
setting_keys = st.one_of(st.sampled_from([
    "failure_cooldown", "request_timeout", "stream_idle_timeout", "cooldown_growth", "max_cooldown", "strategy",
    "affinity", "count_tokens", "count_tokens_timeout", "client_keys", "admin_keys", "max_body_size", "models",
    "log_level", "log_file", "host", "port", "app_name",
]), odd_text)
config_values = st.recursive(config_scalars, lambda inner: st.lists(inner, max_size=3)
                             | st.dictionaries(config_keys, inner, max_size=3), max_leaves=6)
valid_provider = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "c", "main", " padded ", "ünï", "x" * 80]),
     "base_url": st.sampled_from(["http://127.0.0.1:9", "https://api.example.com/v1", "${URL}",
                                  "https://relay.example/api/", "http://u:p@h:8080/x", "http://[::1]:9"]),
     "auth_value": st.sampled_from(["k", "${KEY}", "passthrough", "${EMPTY:-x}", "${NOPE:-fallback}"])},
    optional={
        "type": st.sampled_from(["anthropic", "openai"]),
        "auth_type": st.sampled_from(["api_key", "auth_token", "passthrough"]),
        "big_model": st.sampled_from(["gpt-4o", "passthrough", "", None]),
        "small_model": st.sampled_from(["gpt-4o-mini", "passthrough"]),
        "enabled": st.booleans(),
        "priority": st.integers(-3, 3),
        "weight": st.sampled_from([0.5, 1, 3]),
        "extra_headers": st.dictionaries(st.sampled_from(["X-Title", "HTTP-Referer"]), st.sampled_from(["t", "${KEY}"]),
                                         max_size=2),
        "max_tokens_cap": st.sampled_from([8192, None]),
        "stream_options": st.booleans(),
        "reasoning": st.sampled_from(["none", "reasoning_effort", "openrouter", "deepseek"]),
        "merge_system_messages": st.booleans(),
        "proxy": st.sampled_from(["http://127.0.0.1:3128", None]),
    },
)
valid_settings = st.fixed_dictionaries({}, optional={
    "strategy": st.sampled_from(["priority", "round_robin", "weighted", "random", "least_latency"]),
    "failure_cooldown": st.sampled_from([0, 60]),
    "request_timeout": st.sampled_from([0.5, 60]),
    "affinity": st.sampled_from(["session", "none"]),
    "count_tokens": st.sampled_from(["local", "upstream", "auto"]),
    "client_keys": st.lists(st.sampled_from(["k1", "${KEY}"]), max_size=2),
    "log_level": st.sampled_from(["debug", "INFO"]),
    "port": st.sampled_from([8080, 1]),
    "models": st.lists(st.sampled_from(MODELS[:3]), max_size=2),
})
valid_documents = st.fixed_dictionaries(
    {"providers": st.lists(valid_provider, min_size=1, max_size=3, unique_by=lambda p: p["name"])},
    optional={"settings": valid_settings},
)
junk_documents = st.fixed_dictionaries(
    {"providers": maybe(st.lists(weighted(
        (2, st.fixed_dictionaries(
            {"name": maybe(st.sampled_from(["a", "b", "a"])), "base_url": maybe(config_scalars)},
            optional={"auth_value": config_scalars, "type": config_scalars, "auth_type": config_scalars,
                      "big_model": config_scalars, "weight": config_scalars, "priority": config_scalars,
                      "extra_headers": config_values, "max_tokens_cap": config_scalars,
                      "reasoning": config_scalars},
        )),
        (1, st.dictionaries(config_keys, config_values, max_size=5)),
        (1, config_values),
    ), max_size=3))},
    optional={"settings": maybe(st.dictionaries(setting_keys, config_values, max_size=4)), "extra": config_values},
)
config_documents = weighted((3, valid_documents), (3, mutated(valid_documents)), (1, junk_documents))


def _yaml(document: Any, style: bool | None) -> str:
    import yaml

    return yaml.safe_dump(document, default_flow_style=style, allow_unicode=True)


YAML_PIECES = ["providers:", "settings:", "  - name: a", "    base_url: http://x", "  -", "- ", "    auth_value: ${KEY}",
               "  strategy: random", "&a", "*a", "? [a]", ": b", "!!binary", "!!python/object:os.system", "{", "}",
               "[", "]", "'", '"', "\t", "%YAML 1.2", "---", "...", "|", ">", "#", "key: value", "\x00", "\ufeff"]
yaml_documents = st.builds(_yaml, config_documents.filter(lambda d: not _has_surrogates(d)),
                           st.sampled_from([None, False, True]))


def _splice(text: str, position: int, cut: int, insert: str) -> str:
    position %= len(text) + 1
    return text[:position] + insert + text[position + cut :]


yaml_texts = weighted(
    (4, yaml_documents),
    (2, st.builds(_splice, yaml_documents, st.integers(0, 10**4), st.integers(0, 5),
                  st.one_of(st.sampled_from(YAML_PIECES + [" ", "\n", ":", "-", "  "]), st.text(max_size=3)))),
    (1, st.lists(st.sampled_from(YAML_PIECES), max_size=12).map("\n".join)),
    (1, st.text(max_size=100)),
)


@fuzz_settings(300)
@given(text=yaml_texts)
def test_parse_config_raises_only_config_errors(text):
    try:
        loaded = parse_config(text, "providers.yaml", ENVIRON)
    except ConfigError as exc:
        assert str(exc).startswith("providers.yaml: ")
        assert "Traceback" not in str(exc)
        return
    assert loaded.config.providers
    assert len({p.name for p in loaded.config.providers}) == len(loaded.config.providers)
    assert all(isinstance(w, str) for w in loaded.warnings)
    for provider in loaded.config.providers:
        assert provider.base_url.lower().startswith(("http://", "https://"))  # the scheme is case-insensitive
        assert provider.auth_type == "passthrough" or provider.auth_value


# =============================================================================================================
# 2. the running balancer
# =============================================================================================================


class _AnyMethodHandler(_Handler):
    """The fakes' handler answering every method (the balancer forwards any method of other `/v1/` paths)."""

    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _Handler._handle


def _any_method_fake(behavior: Behavior) -> FakeProvider:
    fake = FakeProvider(behavior)
    fake._server.RequestHandlerClass = _AnyMethodHandler
    return fake.start()


def _head_or_reply(handler, request, status: int, body: dict) -> None:
    if request.method == "HEAD":
        handler.send_response(status)
        handler.send_header("content-length", "0")
        handler.end_headers()
    else:
        handler.reply(status, body)


def _error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


class AnthropicAnswers(Behavior):
    """What Anthropic's API does, roughly: messages, counts, 400 for a body it cannot read, 404 elsewhere."""

    def run(self, handler, request, fake):
        route = request.path.split("?", 1)[0]
        try:
            body = json.loads(request.body) if request.body else None
        except (ValueError, RecursionError):
            body = None
        if route not in ("/v1/messages", "/v1/messages/count_tokens"):
            _head_or_reply(handler, request, 404, _error("not_found_error", f"{request.method} {route}"))
        elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
            _head_or_reply(handler, request, 400, _error("invalid_request_error", "bad body"))
        elif route == "/v1/messages/count_tokens":
            handler.reply(200, {"input_tokens": 42})
        elif body.get("stream") is True:
            handler.stream([sse(e, d) for e, d in anthropic_stream_events(body["model"], ["Hel", "lo"])])
        else:
            handler.reply(200, anthropic_message(body["model"], "Hello"))


class OpenAIAnswers(Behavior):
    """An OpenAI-compatible server: a completion (or its stream) for any readable chat request."""

    def run(self, handler, request, fake):
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            body = None
        if request.path.split("?", 1)[0] != "/v1/chat/completions" or not isinstance(body, dict):
            _head_or_reply(handler, request, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        if body.get("stream"):
            chunks = [
                {"id": "chatcmpl-f", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
                {"id": "chatcmpl-f", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
                {"id": "chatcmpl-f", "choices": [], "usage": usage},
            ]
            handler.stream([b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"])
        else:
            handler.reply(200, {"id": "chatcmpl-f", "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]})


@pytest.fixture(scope="module")
def anthropic_fake():
    fake = _any_method_fake(AnthropicAnswers())
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def openai_fake():
    fake = _any_method_fake(OpenAIAnswers())
    yield fake
    fake.stop()


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "text/event-stream", "application/octet-stream", "", "*/*",
                 "application/json; charset=latin-1", "\x7f"]
METHODS = ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "POST"]
OTHER_PATHS = ["/", "/providers", "/providers/reload", "/metrics", "/v1", "/v1/", "/v1/models",
               "/v1/models/claude-sonnet-4-5", "/v1/models/nope", "/v1/complete", "/v1/messages/batches",
               "/v1/messages/", "/v1//messages", "/v1/messages/count_tokens/x", "/v2/messages", "/favicon.ico",
               "/v1/files", "/v1/../providers", "/%2e%2e/v1/messages", "/v1/messages%00", "/v1/%ff", "/ä",
               "/__balancer__/x", "/v1/chat/completions"]
path_segment = st.text(st.sampled_from("abcxyz019-_.~%2F"), min_size=1, max_size=8)
queries = st.sampled_from(["", "", "", "?beta=true", "?a=%ff&b", "?" + "x" * 300, "?stream=true"])


def one_in(n: int, rare: bool = True) -> st.SearchStrategy[bool]:
    """`rare` once in n draws. (Hypothesis prefers the simplest choice, so `integers(0, n) == 0` would be far more
    frequent than 1/n; the first element of `sampled_from` is the simplest.)"""
    return st.sampled_from([not rare] * (n - 1) + [rare])


def servable(body: dict) -> dict:
    """The body with the top-level shape every Messages request needs (the balancer answers 400 without it);
    whatever is inside the content blocks stays as generated."""
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    body["messages"] = [
        m for m in messages
        if isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")
        and isinstance(m.get("content"), (str, list))
    ]
    for key, kinds in (("system", (str, list)), ("tools", list)):
        if key in body and not isinstance(body[key], kinds):
            del body[key]
    return body


def _raw_json(body: Any, ensure_ascii: bool) -> bytes:
    return json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


@st.composite
def client_requests(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(st.sampled_from(["messages"] * 6 + ["count"] * 3 + ["other"] * 2 + ["random"]))
    if target == "messages":
        method, path = draw(st.sampled_from(["POST"] * 9 + METHODS)), "/v1/messages"
    elif target == "count":
        method, path = draw(st.sampled_from(["POST"] * 9 + METHODS)), "/v1/messages/count_tokens"
    elif target == "other":
        method, path = draw(st.sampled_from(METHODS)), draw(st.sampled_from(OTHER_PATHS))
    else:
        method = draw(st.sampled_from(METHODS))
        prefix = draw(st.sampled_from(["/v1/", "/v1/messages/", "/", "/providers/"]))
        path = prefix + "/".join(draw(st.lists(path_segment, min_size=1, max_size=3)))
    path += draw(queries)
    kind = draw(st.sampled_from(["servable"] * 10 + ["json"] * 3 + ["bytes", "non_object", "raw_utf8", "empty",
                                                                     "truncated", "deep"]))
    if kind == "servable":  # gets past the balancer's own checks, so providers are tried and answers relayed
        body = servable(draw(weighted((2, valid_ish_bodies), (2, bodies_with_tools), (1, mutated(valid_ish_bodies)),
                                      (1, mutated(bodies_with_tools)))))
        body["model"] = draw(st.sampled_from(MODELS[:5]))
        body["max_tokens"] = draw(st.sampled_from([1, 64, 4096, 2**31]))
        body["stream"] = draw(st.booleans())
        content = _raw_json(body, ensure_ascii=draw(one_in(6, False)))
    elif kind == "json":
        content = _raw_json(draw(anthropic_bodies), ensure_ascii=True)
    elif kind == "raw_utf8":  # not escaped: a lone surrogate becomes bytes that are not UTF-8
        content = _raw_json(draw(anthropic_bodies), ensure_ascii=False)
    elif kind == "non_object":
        content = _raw_json(draw(json_values), ensure_ascii=True)
    elif kind == "truncated":
        full = _raw_json(draw(valid_ish_bodies), ensure_ascii=True)
        content = full[: draw(st.integers(0, max(0, len(full) - 1)))]
    elif kind == "deep":
        content = b'{"model": "claude-sonnet-4-5", "messages": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    elif kind == "empty":
        content = b""
    else:
        content = draw(st.binary(max_size=200))
    headers: list[tuple[bytes, bytes]] = []
    content_type = draw(st.sampled_from(CONTENT_TYPES + [None, None]))
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    if draw(one_in(20)):
        headers.append((b"content-encoding", draw(st.sampled_from([b"gzip", b"br", b"deflate", b"zstd", b"identity",
                                                                   b"x-junk"]))))
    credential = draw(st.sampled_from([None, None, b"client-key", b"k\xff\xfe", b"\xc3\xa4-key", b"Bearer x"]))
    if credential is not None:
        name = draw(st.sampled_from([b"x-api-key", b"authorization"]))
        headers.append((name, credential))
    if draw(st.booleans()):
        headers.append((b"anthropic-version", b"2023-06-01"))
    if draw(one_in(6)):
        headers.append((b"anthropic-beta", draw(st.sampled_from([b"interleaved-thinking-2025-05-14", b",,", b"\xff"]))))
    return {"method": method, "path": path, "content": content, "headers": headers}


def log_problems(balancer, since: int) -> list[str]:
    """Tracebacks (with the lines that follow them) and mitmproxy's "Addon error" lines logged after `since`."""
    lines = balancer.log_lines[since:]
    problems = [line for line in lines if "Addon error" in line]
    for i, line in enumerate(lines):
        if "Traceback" in line:
            problems.append("\n".join(lines[max(0, i - 1) : i + 40]))
    return problems


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise AssertionError(f"HTTP {response.status_code} body is not JSON: {response.content[:300]!r}") from None


def check_answer(request: dict[str, Any], response: httpx.Response) -> None:
    status, content_type = response.status_code, response.headers.get("content-type", "")
    where = f"{request['method']} {request['path']} -> HTTP {status}"
    assert "text/html" not in content_type, f"{where}: mitmproxy's own HTML page: {response.text[:300]}"
    if request["method"] == "HEAD":
        return
    if status >= 400:
        data = _json_body(response)
        assert isinstance(data, dict) and data.get("type") == "error", f"{where}: {data!r}"[:600]
        error = data.get("error")
        assert isinstance(error, dict) and isinstance(error.get("type"), str) and error["type"], f"{where}: {data!r}"
        assert isinstance(error.get("message"), str), f"{where}: {data!r}"[:600]
        return
    route = request["path"].split("?", 1)[0]
    if request["method"] != "POST" or status >= 300:
        return
    if route == "/v1/messages":
        if content_type.startswith("text/event-stream"):
            assert_stream_grammar(parse_sse(response.content), finished=True)
        else:
            data = _json_body(response)
            assert data.get("type") == "message" and isinstance(data.get("content"), list), f"{where}: {data!r}"
    elif route == "/v1/messages/count_tokens":
        tokens = _json_body(response).get("input_tokens")
        assert isinstance(tokens, int) and tokens >= 0, f"{where}: {response.text[:300]}"


def fuzz_the_balancer(balancer, provider_name: str, examples: int, fixed_seed: int) -> None:
    seen: collections.Counter[str] = collections.Counter()  # what the run covered (shown with pytest -s)

    # A fixed seed per caller (derandomize would give both callers the same examples: same inner function).
    @(seed(fixed_seed) if FUZZ_SCALE == 1 else _same)
    @fuzz_settings(examples)
    @given(request=client_requests())
    def one_request(request):
        since = len(balancer.log_lines)
        with httpx.Client(base_url=balancer.url, timeout=20) as client:
            try:
                response = client.request(request["method"], request["path"], content=request["content"],
                                          headers=request["headers"])
            except httpx.TransportError as exc:
                raise AssertionError(f"the balancer did not answer {request['method']} {request['path']}: {exc!r}")
        seen[f"{request['method']} {request['path'].split('?')[0][:30]} -> {response.status_code}"] += 1
        check_answer(request, response)
        time.sleep(0.01)  # the log reader thread catches up
        problems = log_problems(balancer, since)
        assert not problems, "\n\n".join(problems)[:4000]

    since = len(balancer.log_lines)
    one_request()
    time.sleep(0.2)
    problems = log_problems(balancer, since)
    assert not problems, "\n\n".join(problems)[:4000]
    # ... and a normal request is still served by the provider.
    for stream in (False, True):
        response = httpx.post(balancer.url + "/v1/messages", timeout=20, json={
            "model": "claude-sonnet-4-5", "max_tokens": 16, "stream": stream,
            "messages": [{"role": "user", "content": "Hi"}]})
        assert response.status_code == 200, response.text
        assert response.headers["x-balancer-provider"] == provider_name
        check_answer({"method": "POST", "path": "/v1/messages"}, response)
    print(f"\nfuzzing via {provider_name}: {dict(seen.most_common())}")


def test_fuzzed_requests_to_an_anthropic_provider(balancer, anthropic_fake, unique):
    # A mapped model (the body is re-serialized) and round-robin (session affinity in force).
    name = f"fuzz-a-{unique}"
    balancer.use([anthropic_provider(name, anthropic_fake.url, big_model="mapped-big", small_model="mapped-small")],
                 strategy="round_robin", failure_cooldown=0, request_timeout=10)
    fuzz_the_balancer(balancer, name, 75, fixed_seed=1)


def test_fuzzed_requests_to_an_openai_provider(balancer, openai_fake, unique):
    # Count tokens locally (no Anthropic-type provider to ask).
    name = f"fuzz-o-{unique}"
    balancer.use([openai_provider(name, openai_fake.url)], failure_cooldown=0, request_timeout=10)
    fuzz_the_balancer(balancer, name, 75, fixed_seed=2)


# =============================================================================================================
# regression tests: the minimal failing inputs the fuzzing found
# =============================================================================================================


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


CUT_EMOJI = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "cut \ud83d"}]}


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


def test_regression_lone_surrogate_through_the_balancer(balancer, openai_fake, unique):
    # Was: HTTP 500 "internal error in the balancer" and a traceback in the log.
    balancer.use([openai_provider(f"o-{unique}", openai_fake.url)], strategy="round_robin")
    since = len(balancer.log_lines)
    response = httpx.post(balancer.url + "/v1/messages", timeout=20, headers={"x-api-key": b"k\xff"},
                          content=json.dumps({**CUT_EMOJI, "metadata": {"user_id": "\ud800"}}).encode())
    time.sleep(0.1)
    assert response.status_code == 200, response.text
    assert log_problems(balancer, since) == []


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
