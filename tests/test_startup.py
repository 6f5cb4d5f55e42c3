"""Starting the balancer: the built-in default, a broken providers file, and scripts/serve's listen address."""

from __future__ import annotations

import httpx
import pytest

from balancer_proc import ADDON, MITMDUMP, REPO, BalancerProcess, providers_yaml
from helpers import anthropic_provider, free_port


def test_without_a_providers_file_the_builtin_default_serves(tmp_path):
    # The plain command from the README, run in a directory with no providers.yaml.
    command = [str(MITMDUMP), "-s", str(ADDON), "--mode", "reverse:https://api.anthropic.com",
               "--listen-host", "127.0.0.1", "--listen-port", "0"]
    with BalancerProcess(tmp_path, command=command) as balancer:
        listing = httpx.get(balancer.url + "/providers", timeout=10).json()
        assert listing["config"] == "built-in default"
        (provider,) = listing["providers"]
        assert (provider["name"], provider["type"], provider["base_url"], provider["auth_type"]) == (
            "anthropic", "anthropic", "https://api.anthropic.com", "passthrough")
        assert httpx.get(balancer.url + "/", timeout=10).status_code == 200
    # The addon made mitmproxy connect lazily: answering itself never opened a connection to the target.
    assert "server connect" not in balancer.log


def test_a_broken_providers_file_stops_start_up_with_a_clear_message(tmp_path):
    providers = tmp_path / "providers.yaml"
    providers.write_text("providers:\n  - name: a\n    base_url: http://127.0.0.1:9\n    auth_type: apikey\n")
    assert "providers[0] (name 'a').auth_type" in failed_start_log(tmp_path, providers)


def failed_start_log(tmp_path, providers) -> str:
    """Start mitmdump on a providers file that must stop it: its output, once it has exited non-zero."""
    process = BalancerProcess(tmp_path, providers_file=providers)
    assert process.run_to_exit() != 0
    assert "Traceback" not in process.log
    return process.log


def test_unset_environment_variable_is_named(tmp_path):
    providers = tmp_path / "providers.yaml"
    providers.write_text(providers_yaml([anthropic_provider("a", "http://127.0.0.1:9")
                                         | {"auth_value": "${BALANCER_TEST_UNSET_VAR}"}]))
    log = failed_start_log(tmp_path, providers)
    assert "BALANCER_TEST_UNSET_VAR is not set" in log
    assert "providers[0].auth_value" in log


def serve(tmp_path, *args: str) -> BalancerProcess:
    return BalancerProcess(tmp_path, command=[str(REPO / "scripts" / "serve"), *args])


def test_serve_listens_where_the_providers_file_says(tmp_path):
    port = free_port()
    (tmp_path / "providers.yaml").write_text(
        providers_yaml([anthropic_provider("a", "http://127.0.0.1:9")], host="127.0.0.1", port=port))
    with serve(tmp_path) as balancer:
        assert balancer.port == port
        assert httpx.get(f"http://127.0.0.1:{port}/providers", timeout=10).json()["providers"][0]["name"] == "a"


def test_serve_command_line_flags_win(tmp_path):
    file_port, flag_port = free_port(), free_port()
    (tmp_path / "providers.yaml").write_text(
        providers_yaml([anthropic_provider("a", "http://127.0.0.1:9")], port=file_port))
    with serve(tmp_path, "--listen-port", str(flag_port)) as balancer:
        assert balancer.port == flag_port


def test_serve_reports_a_broken_file_before_starting(tmp_path):
    (tmp_path / "providers.yaml").write_text("providers:\n  - name: a\n")
    process = serve(tmp_path)
    assert process.run_to_exit() == 2
    assert "providers[0] (name 'a').base_url: required key is missing" in process.log
    assert "Traceback" not in process.log


@pytest.mark.parametrize("script", ["serve", "web", "test"])
def test_scripts_are_executable(script):
    path = REPO / "scripts" / script
    assert path.stat().st_mode & 0o111
    assert path.read_text().startswith("#!/usr/bin/env bash")


def test_the_example_providers_file_loads_without_warnings():
    from addon.config import parse_config

    text = (REPO / "providers.example.yaml").read_text()
    environ = {"ANTHROPIC_API_KEY": "k1", "RELAY_ONE_TOKEN": "k2", "OPENROUTER_API_KEY": "k3", "DEEPSEEK_API_KEY": "k4"}
    loaded = parse_config(text, "providers.example.yaml", environ)
    assert loaded.warnings == []
    assert [p.name for p in loaded.config.providers] == [
        "anthropic-official", "relay-one", "openrouter", "deepseek", "my-own-login"]
    assert [p.auth_type for p in loaded.config.providers] == [
        "api_key", "auth_token", "api_key", "api_key", "passthrough"]
    openrouter = loaded.config.providers[2]
    assert (openrouter.type, openrouter.reasoning, openrouter.extra_headers["X-Title"]) == (
        "openai", "openrouter", "Claude Code via balancer")


def test_a_named_providers_file_that_is_missing_stops_start_up(tmp_path):
    """A typo in --set providers=... must not silently become a pass-through to api.anthropic.com."""
    process = BalancerProcess(tmp_path, providers_file=tmp_path / "typo.yaml")
    assert process.run_to_exit() != 0
    assert "typo.yaml: no such file" in process.log


def test_reload_of_a_file_that_is_gone_keeps_the_running_configuration(tmp_path):
    process = BalancerProcess(tmp_path)
    process.write_providers([anthropic_provider("a", "http://127.0.0.1:9")])
    with process:
        process.providers_file.unlink()
        response = process.reload()
        assert response.status_code == 400
        assert "no such file" in response.json()["error"]["message"]
        names = [p["name"] for p in httpx.get(process.url + "/providers", timeout=10).json()["providers"]]
        assert names == ["a"]
