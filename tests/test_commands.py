"""`balancer.status` and `balancer.reload` under mitmproxy's test harness, called as the command prompt does."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addon.commands import BalancerCommands
from addon.providers import Providers
from balancer_proc import providers_yaml
from helpers import anthropic_provider

OVERLOADED = "HTTP 529 overloaded_error: Overloaded"


def write(path, *providers, **settings):
    path.write_text(providers_yaml(list(providers), **settings))
    return str(path)


@pytest.fixture
def file(tmp_path):
    return tmp_path / "providers.yaml"


def two_providers(file):
    return write(
        file,
        anthropic_provider("main", "https://user:secret-pw@main.example/api"),
        anthropic_provider("backup", "http://127.0.0.1:9"),
        strategy="round_robin",
    )


def test_status_shows_source_strategy_and_every_provider(file):
    providers = Providers()
    commands = BalancerCommands(providers, lambda: {"open_streams": 2, "sessions": 1})
    with taddons.context(providers, commands) as tctx:
        tctx.configure(providers, providers=two_providers(file))
        providers.board.record_attempt("main")
        providers.board.record_failure("main", OVERLOADED, 30)
        providers.board.record_attempt("backup")
        providers.board.record_success("backup", 120)

        text = tctx.master.commands.execute("balancer.status")

    first, main, backup = text.splitlines()
    assert first == f"config: {file} | strategy: round_robin | affinity: session | open streams: 2 | sessions: 1"
    assert main.startswith("main: cooling down ")
    seconds = float(main.removeprefix("main: cooling down ").split("s", 1)[0])
    assert 29 <= seconds <= 30
    assert main.endswith(f"s ({OVERLOADED}) | requests 1, failures 1")
    assert backup == "backup: healthy | requests 1, failures 0"
    for credential in ("key-of-main", "key-of-backup", "secret-pw", "user"):
        assert credential not in text


def test_status_as_a_plain_command_and_for_disabled_and_probed_providers(file):
    providers = Providers()
    commands = BalancerCommands(providers)
    with taddons.context(providers, commands) as tctx:
        tctx.configure(
            providers,
            providers=write(
                file,
                anthropic_provider("a", "http://127.0.0.1:9"),
                anthropic_provider("b", "http://127.0.0.1:9", enabled=False),
            ),
        )
        # A failure whose cooldown is over: the next attempt is a probe.
        providers.board.record_failure("a", "connection refused", 0)
        providers.board.record_attempt("a")

        text = tctx.command(commands.status)

    assert text.splitlines() == [
        f"config: {file} | strategy: priority | affinity: none",
        "a: healthy, being probed | requests 1, failures 1",
        "b: disabled | requests 0, failures 0",
    ]


def test_status_with_the_built_in_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no providers.yaml here, and none named: the built-in default
    providers = Providers()
    commands = BalancerCommands(providers)
    with taddons.context(providers, commands) as tctx:
        tctx.configure(providers, providers="providers.yaml")
        text = tctx.master.commands.execute("balancer.status")
    assert text.splitlines()[0].startswith("config: built-in default | strategy: priority")
    assert text.splitlines()[1] == "anthropic: healthy | requests 0, failures 0"


def test_status_says_when_the_file_could_not_be_loaded_at_start_up(file):
    providers = Providers()
    commands = BalancerCommands(providers)
    file.write_text("providers: 3\n")
    with taddons.context(providers, commands) as tctx:
        tctx.configure(providers, providers=str(file))
        text = tctx.master.commands.execute("balancer.status")
    assert "no usable configuration" in text
    assert str(file) in text


def test_reload_reads_the_file_again_and_keeps_health(file):
    providers = Providers()
    commands = BalancerCommands(providers)
    with taddons.context(providers, commands) as tctx:
        tctx.configure(providers, providers=two_providers(file))
        providers.board.record_failure("main", OVERLOADED, 30)
        write(
            file,
            anthropic_provider("main", "http://127.0.0.1:9"),
            anthropic_provider("extra", "http://127.0.0.1:9", enabled=False),
            anthropic_provider("new", "http://127.0.0.1:9", colour="blue"),
        )

        summary = tctx.master.commands.execute("balancer.reload")

        assert summary == (
            f"providers from {file}: 2 of 3 enabled (main, new); "
            "1 warning: providers[2] (new): unknown key 'colour' ignored"
        )
        assert "\n" not in summary
        assert [p.name for p in providers.config.providers] == ["main", "extra", "new"]
        assert providers.board.is_cooling_down("main")
        assert tctx.command(commands.reload) == summary


def test_reload_of_a_bad_file_raises_and_keeps_the_running_configuration(file, caplog):
    providers = Providers()
    commands = BalancerCommands(providers)
    with taddons.context(providers, commands) as tctx:
        tctx.configure(providers, providers=two_providers(file))
        file.write_text("providers:\n  - name: a\n")

        with caplog.at_level(logging.ERROR, "balancer"), pytest.raises(exceptions.CommandError) as raised:
            tctx.master.commands.execute("balancer.reload")

        message = str(raised.value)
        assert "base_url: required key is missing" in message
        assert "the running configuration is kept" in message
        assert "reload rejected" in caplog.text
        assert [p.name for p in providers.config.providers] == ["main", "backup"]
        assert providers.settings.strategy == "round_robin"
        assert tctx.master.commands.execute("balancer.status").startswith(f"config: {file} | strategy: round_robin")

        file.write_text("providers: [\n")
        with pytest.raises(exceptions.CommandError, match="not valid YAML"):
            tctx.command(commands.reload)
        assert [p.name for p in providers.config.providers] == ["main", "backup"]


def test_the_commands_are_listed_with_their_help():
    providers = Providers()
    commands = BalancerCommands(providers)
    with taddons.context(providers, commands) as tctx:
        listed = tctx.master.commands.commands
        for name in ("balancer.status", "balancer.reload"):
            assert listed[name].parameters == []
            assert listed[name].return_type is str
        assert "cooling down" in listed["balancer.status"].help
        assert "POST /providers/reload" in listed["balancer.reload"].help
