"""Configuration mistakes people make, through the real mitmdump and scripts/serve: a base_url with the path the
balancer adds itself, a named providers file that is missing, the example file copied as it is, unset variables
and misspelt keys."""

from __future__ import annotations

import shutil

import httpx
import pytest

from addon.config import ConfigError, parse_config
from balancer_proc import REPO, BalancerProcess, providers_yaml
from fakes import FakeProvider, Message, openai_json
from helpers import anthropic_provider, openai_provider, served_by, wait_until

EXAMPLE_VARIABLES = ("ANTHROPIC_API_KEY", "RELAY_ONE_TOKEN", "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY")
COMPLETION = {"id": "c", "object": "chat.completion", "model": "gpt-big", "usage": {},
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]}


def serve(tmp_path, *args: str) -> BalancerProcess:
    return BalancerProcess(tmp_path, command=[str(REPO / "scripts" / "serve"), "--listen-port", "0", *args])


def refused_in_one_line(process: BalancerProcess) -> str:
    """scripts/serve stopped before mitmproxy started: exit 2 and one line of output, which is returned."""
    assert process.run_to_exit() == 2
    lines = [line for line in process.log_lines if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), process.log
    return lines[0]


# -- base_url ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/v1/messages", "/v1/messages/"])
def test_an_anthropic_base_url_ending_in_v1_is_not_doubled(balancer, client, unique, suffix):
    with FakeProvider(Message("Hello")) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url + suffix)])
        assert served_by(client) == (f"a-{unique}", "Hello")
        assert [r.path for r in fake.requests] == ["/v1/messages"]
        assert balancer.provider_status(f"a-{unique}")["base_url"] == fake.url
        ending = suffix.rstrip("/")
        wait_until(lambda: any(f"(a-{unique}): base_url ends in {ending}," in line for line in balancer.log_lines),
                   what="the warning")


def test_an_openai_base_url_ending_in_chat_completions_is_not_doubled(balancer, client, unique):
    with FakeProvider(openai_json(COMPLETION)) as fake:
        entry = openai_provider(f"o-{unique}", fake.url) | {"base_url": fake.url + "/v1/chat/completions/"}
        balancer.use([entry])
        assert served_by(client) == (f"o-{unique}", "Hello")
        assert [r.path for r in fake.requests] == ["/v1/chat/completions"]
        wait_until(lambda: any(f"(o-{unique}): base_url ends in /chat/completions" in line
                               for line in balancer.log_lines), what="the warning")


# -- a named providers file that is missing ------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", [["--set", "providers=typo.yaml"], ["--set=providers=typo.yaml"]])
def test_serve_refuses_a_named_providers_file_that_is_missing_before_mitmproxy_starts(tmp_path, spelling):
    (tmp_path / "providers.yaml").write_text(providers_yaml([anthropic_provider("a", "http://127.0.0.1:9")]))
    line = refused_in_one_line(serve(tmp_path, *spelling))
    assert "typo.yaml: no such file" in line


def test_serve_without_a_named_file_or_providers_yaml_still_runs_the_builtin_default(tmp_path):
    with serve(tmp_path) as balancer:
        assert httpx.get(balancer.url + "/providers", timeout=10).json()["config"] == "built-in default"


# -- the example file, copied ------------------------------------------------------------------------------------

def test_the_example_file_copied_runs_with_the_variables_of_its_enabled_providers_only(tmp_path, monkeypatch):
    for name in EXAMPLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    shutil.copy(REPO / "providers.example.yaml", tmp_path / "providers.yaml")
    line = refused_in_one_line(serve(tmp_path))  # nothing set: only the enabled provider's variable is named
    assert "environment variable ANTHROPIC_API_KEY is not set" in line
    assert not any(variable in line for variable in EXAMPLE_VARIABLES[1:])
    process = serve(tmp_path)
    process.env = {"ANTHROPIC_API_KEY": "sk-test"}
    with process as balancer:
        names = [p["name"] for p in httpx.get(balancer.url + "/providers", timeout=10).json()["providers"]]
        assert names == ["anthropic-official", "relay-one", "openrouter", "deepseek", "my-own-login"]
        for variable in EXAMPLE_VARIABLES[1:]:
            wait_until(lambda v=variable: any(f"environment variable {v} is not set" in line
                                              for line in balancer.log_lines), what=f"the warning about {variable}")


# -- unset variables and misspelt keys -----------------------------------------------------------------------

def test_every_unset_variable_is_named_in_one_message(tmp_path):
    text = providers_yaml(
        [anthropic_provider("a", "http://127.0.0.1:9") | {"auth_value": "${BALANCER_T_ONE}"},
         anthropic_provider("b", "http://127.0.0.1:9") | {"auth_value": "${BALANCER_T_TWO}"},
         anthropic_provider("c", "http://127.0.0.1:9", enabled=False) | {"auth_value": "${BALANCER_T_OFF}"}],
        client_keys=["${BALANCER_T_THREE}"])
    (tmp_path / "providers.yaml").write_text(text)
    line = refused_in_one_line(serve(tmp_path))
    assert "environment variables BALANCER_T_ONE, BALANCER_T_TWO, BALANCER_T_THREE are not set" in line
    assert "providers[0].auth_value" in line and "settings.client_keys[0]" in line
    assert "BALANCER_T_OFF" not in line  # a disabled provider's variable only warns


def test_a_misspelt_key_is_named_even_when_validation_fails(tmp_path):
    entry = anthropic_provider("a", "http://127.0.0.1:9")
    entry["auth_valu"] = entry.pop("auth_value")
    (tmp_path / "providers.yaml").write_text(providers_yaml([entry], stream_keepalive=1, strategi="random"))
    line = refused_in_one_line(serve(tmp_path))
    assert "auth_value is required" in line
    assert "providers[0] (a): unknown key 'auth_valu'" in line
    assert "settings: unknown key 'strategi'" in line
    assert "stream_keepalive" not in line


def test_a_disabled_providers_unset_variable_is_a_warning_and_its_reference_stays_as_written():
    text = providers_yaml([anthropic_provider("on", "http://127.0.0.1:9"),
                           anthropic_provider("off", "http://127.0.0.1:9", enabled="false")
                           | {"auth_value": "${BALANCER_T_OFF}"}])
    loaded = parse_config(text, "p.yaml", {})
    assert loaded.warnings == ["providers[1] (off, disabled): environment variable BALANCER_T_OFF is not set "
                               "(providers[1].auth_value left as written; it must be set before the provider is "
                               "enabled)"]
    assert loaded.config.providers[1].auth_value == "${BALANCER_T_OFF}"
    with pytest.raises(ConfigError, match="BALANCER_T_OFF is not set"):
        parse_config(text.replace("enabled: 'false'", "enabled: true"), "p.yaml", {})
