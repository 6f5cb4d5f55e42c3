"""Server tools go where they run, through the real mitmdump: a request carrying Anthropic server tools goes to the
Anthropic-type providers first; an OpenAI-type provider gets it only when none of those is usable, without the
tools, and the answer's header and the log line name what was dropped. Also the pure parts (server_tools.py)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from addon.config import ProviderConfig
from addon.openai_request import OpenAIOptions, to_openai_request
from addon.provider_fit import fit_plan
from addon.request_traits import traits_of
from addon.routing import Plan
from addon.server_tools import DROPPED_TOOLS_HEADER, carries_server_tools, dropped_tools
from fakes import FakeProvider, Message, Raw, Status, openai_json
from helpers import MESSAGES, anthropic_provider, free_port, openai_provider, openai_sse, wait_until

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
READ = {"name": "Read", "description": "read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-big",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "from openai"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
OPENAI_STREAM = openai_sse(
    {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "from openai"},
                             "finish_reason": None}]},
    {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "[DONE]")


def ask(client: anthropic.Anthropic, stream: bool, tools: list[dict[str, Any]]) -> tuple[str, str | None, str]:
    """(provider, dropped-tools header, text) of one request carrying `tools`."""
    if stream:
        with client.messages.stream(model="claude-sonnet-4", max_tokens=16, messages=MESSAGES,
                                    tools=tools) as s:  # type: ignore[arg-type]
            message = s.get_final_message()
            headers = s.response.headers
    else:
        raw = client.messages.with_raw_response.create(model="claude-sonnet-4", max_tokens=16, messages=MESSAGES,
                                                       tools=tools)  # type: ignore[arg-type]
        message, headers = raw.parse(), raw.headers
    text = "".join(block.text for block in message.content if block.type == "text")
    return headers["x-balancer-provider"], headers.get(DROPPED_TOOLS_HEADER), text


@pytest.mark.parametrize("stream", [False, True])
def test_server_tools_go_to_an_anthropic_provider_before_an_openai_one_first_in_the_plan(
        balancer, client, unique, stream):
    with FakeProvider(openai_json(COMPLETION)) as openai_fake, FakeProvider(Message("from anthropic")) as anth:
        balancer.use([openai_provider(f"o-{unique}", openai_fake.url), anthropic_provider(f"a-{unique}", anth.url)])
        assert ask(client, stream, [WEB_SEARCH, READ]) == (f"a-{unique}", None, "from anthropic")
        assert anth.message_requests[0].json()["tools"] == [WEB_SEARCH, READ]  # as the client sent them
        assert openai_fake.requests == []
        # Without server tools the plan's order stands.
        assert ask(client, stream, [READ])[0] == f"o-{unique}"


@pytest.mark.parametrize("stream", [False, True])
def test_without_a_usable_anthropic_provider_the_tools_are_dropped_and_named(balancer, client, unique, stream):
    answer = Raw(OPENAI_STREAM) if stream else openai_json(COMPLETION)
    with FakeProvider(answer) as openai_fake, FakeProvider(Status(529)) as anth:
        balancer.use([openai_provider(f"o-{unique}", openai_fake.url), anthropic_provider(f"a-{unique}", anth.url)])
        assert ask(client, stream, [WEB_SEARCH, READ]) == (f"o-{unique}", "web_search", "from openai")
        assert len(anth.message_requests) == 1  # tried first, and failed
        sent = openai_fake.requests[0].json()
        assert [tool["function"]["name"] for tool in sent["tools"]] == ["Read"]
        wait_until(lambda: any(f"-> o-{unique}/" in line and "dropped tools: web_search" in line
                               for line in balancer.log_lines), what="the request's log line")


def test_with_no_anthropic_provider_configured_the_openai_one_serves_without_them(balancer, client, unique):
    with FakeProvider(openai_json(COMPLETION)) as openai_fake:
        balancer.use([openai_provider(f"o-{unique}", openai_fake.url),
                      anthropic_provider(f"gone-{unique}", f"http://127.0.0.1:{free_port()}", enabled=False)])
        code = {"type": "code_execution_20250825", "name": "code_execution"}
        assert ask(client, False, [WEB_SEARCH, code, READ]) == (
            f"o-{unique}", "web_search, code_execution", "from openai")


# -- the pure parts ----------------------------------------------------------------------------------------------

def provider(name: str, kind: str) -> ProviderConfig:
    return ProviderConfig(name=name, type=kind, base_url="http://127.0.0.1:9", auth_value="k")  # type: ignore[arg-type]


def test_server_tools_put_anthropic_providers_first_keeping_each_types_order_and_cooling_providers_stay_later():
    o1, a1, o2, a2 = provider("o1", "openai"), provider("a1", "anthropic"), provider("o2", "openai"), \
        provider("a2", "anthropic")
    o3, a3 = provider("o3", "openai"), provider("a3", "anthropic")
    traits = traits_of({"model": "claude-sonnet-4", "tools": [WEB_SEARCH]}, [], None)
    fitted = fit_plan(Plan(usable=[o1, a1, o2, a2], skipped=[], later=[o3, a3]), traits, [o1, a1, o2, a2, o3, a3])
    assert [p.name for p in fitted.plan.usable] == ["a1", "a2", "o1", "o2"]
    assert [p.name for p in fitted.plan.later] == ["a3", "o3"]
    assert set(fitted.last_resort) == {"o1", "o2", "o3"} and fitted.serves_now and fitted.refusal is None


@pytest.mark.parametrize(("tool", "server"), [
    ({"type": "web_search_20260209", "name": "web_search"}, True),
    ({"type": "web_fetch_20250910", "name": "web_fetch"}, True),
    ({"type": "code_execution_20250825", "name": "code_execution"}, True),
    ({"type": "tool_search_tool_regex_20251119", "name": "tool_search"}, True),
    ({"type": "mcp_toolset", "mcp_server_name": "docs"}, True),
    ({"type": "bash_20250124", "name": "bash"}, False),
    ({"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}, False),
    ({"type": "memory_20250818", "name": "memory"}, False),
    (READ, False),
])
def test_which_tools_are_server_tools(tool, server):
    assert carries_server_tools({"tools": [READ, tool]}) is server


def test_dropped_tools_are_those_the_translation_offers_no_function_for():
    tools = [WEB_SEARCH, READ, {"type": "bash_20250124", "name": "bash"}, {"type": "mcp_toolset",
             "mcp_server_name": "docs\r\nx-evil: 1"}, {"type": "computer_20250124", "name": "computer"}]
    body, names = to_openai_request({"model": "m", "max_tokens": 5, "messages": MESSAGES, "tools": tools}, "m",
                                    OpenAIOptions())
    assert dropped_tools(tools, body, names) == ("web_search", "docs__x-evil:_1", "computer")
