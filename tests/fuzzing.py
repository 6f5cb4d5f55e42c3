"""What the property tests (tests/test_fuzz_*.py) share: hypothesis settings and strategies for valid-ish and
garbage input.

Every property runs twice: quick (a tenth of its examples) in the default run, deep (all of them) under the `slow`
marker, which CI runs after the default suite. Every `fuzz_settings` is `derandomize=True` (the same examples on
every run, so CI is reproducible) with `database=None` and `deadline=None`. `FUZZ_SCALE=20 pytest -m slow
tests/test_fuzz_*.py` fuzzes 20 times longer with random seeds (to look for new bugs).
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import os
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addon.openai_request import OpenAIOptions

SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


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


def quick(examples: int) -> int:
    """The examples of a property in the default run: a tenth of its deep count, at least ten."""
    return max(10, examples // 10)


def depths(examples: int) -> pytest.MarkDecorator:
    """Parametrizes a test's `examples`: the quick count in the default run, all of them under the slow marker."""
    return pytest.mark.parametrize("examples", [
        pytest.param(quick(examples), id="quick"),
        pytest.param(examples, id="deep", marks=pytest.mark.slow),
    ])


def quick_and_deep(examples: int, **strategies: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """`@given(**strategies)` with `fuzz_settings`, as two tests: `[quick]` in the default run, `[deep]` (`examples`)
    under the slow marker. The test's other arguments are fixtures, as with `@given`."""

    def decorate(check: Callable[..., None]) -> Callable[..., None]:
        @depths(examples)
        def test(examples: int, **fixtures: Any) -> None:
            fuzz_settings(examples)(given(**strategies)(check))(**fixtures)

        fixtures = [p for name, p in inspect.signature(check).parameters.items() if name not in strategies]
        test.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # what pytest reads for fixtures
            [inspect.Parameter("examples", inspect.Parameter.POSITIONAL_OR_KEYWORD), *fixtures])
        test.__name__, test.__qualname__, test.__doc__ = check.__name__, check.__qualname__, check.__doc__
        test.__module__ = check.__module__
        return test

    return decorate


# Deep enough to exhaust the JSON/YAML parsers' recursion limits on every Python version (3.11: ~1000 levels;
# 3.12+: the C stack limit, several thousand).
DEEP = 100_000


# -- strategies: JSON junk --------------------------------------------------------------------------------------

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


# -- strategies: Anthropic request bodies -----------------------------------------------------------------------

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


def _has_surrogates(value: Any) -> bool:
    return "\\ud" in json.dumps(value, default=str).lower()


usage = st.fixed_dictionaries(
    {},
    optional={"prompt_tokens": maybe(st.integers(-5, 10**9)), "completion_tokens": maybe(st.integers(-5, 10**9)),
              "prompt_tokens_details": maybe(st.fixed_dictionaries({"cached_tokens": maybe(st.integers(-5, 10**9))})),
              "prompt_cache_hit_tokens": maybe(st.integers(0, 100))},
)


ENVIRON = {"KEY": "k-123", "EMPTY": "", "URL": "http://127.0.0.1:9"}

CUT_EMOJI = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "cut \ud83d"}]}
