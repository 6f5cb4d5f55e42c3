"""Unit tests for addon/config.py: the providers file, `${ENV}` substitution, validation and the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from addon.config import DEFAULT_SOURCE, ConfigError, LoadedConfig, load_config, parse_config, substitute_env

SEED_YAML = """\
providers:
  - name: "GAC"
    type: "anthropic"
    base_url: "https://gaccode.com/claudecode"
    auth_type: "api_key"
    auth_value: "sk-gac-123"
    enabled: true

  - name: "Custom Provider"
    type: "anthropic"
    base_url: "https://custom.example.com/"
    auth_type: "auth_token"
    auth_value: "${CUSTOM_TOKEN}"
    big_model: "claude-sonnet-4-20250514"
    small_model: "claude-3-5-haiku-20241022"
    enabled: true

  - name: "OpenRouter"
    type: "openai"
    base_url: "https://openrouter.ai/api/v1"
    auth_type: "api_key"
    auth_value: "sk-or-456"
    big_model: "anthropic/claude-sonnet-4"
    small_model: "anthropic/claude-3.5-haiku"
    enabled: false

  - name: "Client Key"
    type: "anthropic"
    base_url: "https://api.anthropic.com"
    auth_type: "api_key"
    auth_value: "passthrough"
    big_model: "passthrough"
    enabled: true

settings:
  failure_cooldown: 90
  request_timeout: 30
  log_level: "DEBUG"
  host: "127.0.0.1"
  port: 9090
  app_name: "Claude Code Provider Balancer"
  app_version: "0.5.0"
"""

PROVIDER = """\
providers:
  - name: x
    base_url: https://example.com
    auth_value: k
"""


def write(tmp_path: Path, text: str, name: str = "providers.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> LoadedConfig:
    return load_config(write(tmp_path, text), environ=environ if environ is not None else {})


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, environ)
    message = str(caught.value)
    assert "Traceback" not in message and 'File "' not in message
    return message


# --- the seed format ---------------------------------------------------------------------------------


def test_seed_file_loads_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_YAML)
    loaded = load_config(path, environ={"CUSTOM_TOKEN": "tok-789"})

    assert loaded.source == str(path)
    assert loaded.warnings == []
    gac, custom, openrouter, client_key = loaded.config.providers

    assert (gac.name, gac.type, gac.base_url) == ("GAC", "anthropic", "https://gaccode.com/claudecode")
    assert (gac.auth_type, gac.auth_value, gac.enabled) == ("api_key", "sk-gac-123", True)
    assert gac.big_model is None and gac.small_model is None

    assert custom.auth_type == "auth_token"
    assert custom.auth_value == "tok-789"
    assert custom.base_url == "https://custom.example.com"  # trailing slash stripped
    assert (custom.big_model, custom.small_model) == ("claude-sonnet-4-20250514", "claude-3-5-haiku-20241022")

    assert (openrouter.type, openrouter.enabled) == ("openai", False)
    assert openrouter.base_url == "https://openrouter.ai/api/v1"
    assert openrouter.small_model == "anthropic/claude-3.5-haiku"

    # `auth_value: passthrough` is the seed spelling of "use the client's own credential".
    assert client_key.auth_type == "passthrough"
    assert client_key.auth_value == ""
    assert client_key.big_model is None and client_key.small_model is None

    settings = loaded.config.settings
    assert settings.failure_cooldown == 90
    assert settings.request_timeout == 30
    assert settings.log_level == "DEBUG"
    assert (settings.host, settings.port) == ("127.0.0.1", 9090)
    assert (settings.app_name, settings.app_version) == ("Claude Code Provider Balancer", "0.5.0")


def test_lower_case_log_level_is_accepted(tmp_path: Path) -> None:
    loaded = load_text(tmp_path, PROVIDER + "settings:\n  log_level: info\n")
    assert loaded.config.settings.log_level == "INFO"


def test_settings_default_when_absent(tmp_path: Path) -> None:
    settings = load_text(tmp_path, PROVIDER).config.settings
    assert settings.log_level == "INFO"
    assert settings.failure_cooldown > 0 and settings.request_timeout > 0
    assert settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    "auth_lines",
    ["auth_type: passthrough", "auth_value: passthrough", "auth_type: api_key\n    auth_value: passthrough"],
)
def test_both_passthrough_spellings(tmp_path: Path, auth_lines: str) -> None:
    text = f"providers:\n  - name: p\n    base_url: https://example.com\n    {auth_lines}\n"
    provider = load_text(tmp_path, text).config.providers[0]
    assert provider.auth_type == "passthrough"
    assert provider.auth_value == ""


def test_passthrough_auth_type_discards_a_stray_auth_value(tmp_path: Path) -> None:
    text = "providers:\n  - name: p\n    base_url: https://e.com\n    auth_type: passthrough\n    auth_value: secret\n"
    provider = load_text(tmp_path, text).config.providers[0]
    assert (provider.auth_type, provider.auth_value) == ("passthrough", "")


@pytest.mark.parametrize("line", ["big_model: passthrough", "big_model: ''", ""])
def test_big_model_passthrough_empty_or_missing_is_none(tmp_path: Path, line: str) -> None:
    text = PROVIDER + (f"    {line}\n" if line else "") + "    small_model: tiny\n"
    provider = load_text(tmp_path, text).config.providers[0]
    assert provider.big_model is None
    assert provider.small_model == "tiny"


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("https://example.com/", "https://example.com"),
        ("https://example.com/api/", "https://example.com/api"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://example.com/api", "https://example.com/api"),
    ],
)
def test_trailing_slash_is_stripped_from_base_url(tmp_path: Path, written: str, stored: str) -> None:
    text = f"providers:\n  - name: x\n    base_url: {written}\n    auth_value: k\n"
    assert load_text(tmp_path, text).config.providers[0].base_url == stored


# --- ${ENV} substitution -----------------------------------------------------------------------------


def test_env_substitution_in_any_string(tmp_path: Path) -> None:
    text = """\
providers:
  - name: ${NAME}
    base_url: https://${HOST}/v${VERSION}
    auth_value: pre-${KEY}-post
settings:
  host: ${BIND}
  port: ${PORT}
"""
    environ = {"NAME": "env-name", "HOST": "api.example.com", "VERSION": "2", "KEY": "s3cr3t", "BIND": "127.0.0.1",
               "PORT": "9191"}
    loaded = load_text(tmp_path, text, environ)
    provider = loaded.config.providers[0]
    assert provider.name == "env-name"
    assert provider.base_url == "https://api.example.com/v2"
    assert provider.auth_value == "pre-s3cr3t-post"
    assert loaded.config.settings.host == "127.0.0.1"
    assert loaded.config.settings.port == 9191


def test_env_substitution_reaches_nested_dicts_and_lists() -> None:
    data = {"a": {"b": ["${X}", {"c": "x=${X}, y=${Y}"}, 7, None, True]}, "d": "${Y}"}
    result = substitute_env(data, {"X": "1", "Y": "two"})
    assert result == {"a": {"b": ["1", {"c": "x=1, y=two"}, 7, None, True]}, "d": "two"}


def test_env_substitution_is_not_recursive() -> None:
    assert substitute_env({"k": "${A}"}, {"A": "${B}", "B": "nope"}) == {"k": "${B}"}


def test_env_default_used_when_variable_is_unset(tmp_path: Path) -> None:
    text = (
        "providers:\n  - name: x\n"
        "    base_url: ${URL:-https://fallback.example.com/}\n"
        "    auth_value: ${KEY:-dflt}\n"
    )
    provider = load_text(tmp_path, text, {}).config.providers[0]
    assert provider.base_url == "https://fallback.example.com"
    assert provider.auth_value == "dflt"


def test_env_default_ignored_when_variable_is_set() -> None:
    assert substitute_env({"k": "${KEY:-dflt}"}, {"KEY": "real"}) == {"k": "real"}


def test_env_empty_default_gives_empty_string() -> None:
    assert substitute_env({"k": "a${KEY:-}b"}, {}) == {"k": "ab"}


def test_env_default_applies_to_an_empty_variable_like_the_shell() -> None:
    assert substitute_env({"k": "${KEY:-dflt}"}, {"KEY": ""}) == {"k": "dflt"}


def test_unset_variable_names_variable_and_key_path(tmp_path: Path) -> None:
    text = PROVIDER.replace("auth_value: k", "auth_value: ${MISSING_TOKEN}")
    message = config_error(tmp_path, text, {"OTHER": "x"})
    assert "MISSING_TOKEN" in message
    assert "providers[0].auth_value" in message
    assert "providers.yaml" in message


def test_unset_variable_inside_nested_list_names_the_path() -> None:
    with pytest.raises(ConfigError) as caught:
        substitute_env({"providers": [{"name": "a"}, {"tags": ["ok", "${NOPE}"]}]}, {})
    assert "NOPE" in str(caught.value)
    assert "providers[1].tags[1]" in str(caught.value)


# --- error messages ----------------------------------------------------------------------------------


def test_wrong_auth_type_names_provider_key_and_value(tmp_path: Path) -> None:
    text = PROVIDER + "    auth_type: bearer\n"
    message = config_error(tmp_path, text)
    assert "providers[0] (name 'x').auth_type" in message
    assert "bearer" in message


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, PROVIDER + "    type: gemini\n")
    assert "providers[0] (name 'x').type" in message
    assert "gemini" in message


def test_error_in_second_provider_names_it(tmp_path: Path) -> None:
    text = PROVIDER + "  - name: beta\n    base_url: https://b.example.com\n    auth_type: oauth\n    auth_value: k\n"
    message = config_error(tmp_path, text)
    assert "providers[1] (name 'beta').auth_type" in message
    assert "oauth" in message


def test_a_missing_base_url_is_named_with_its_provider(tmp_path: Path) -> None:
    message = config_error(tmp_path, "providers:\n  - name: x\n    auth_value: k\n")
    assert "providers[0] (name 'x').base_url" in message
    assert "missing" in message


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com", "https://", "file:///etc/passwd"])
def test_a_base_url_that_is_not_http_is_refused_and_quoted(tmp_path: Path, url: str) -> None:
    message = config_error(tmp_path, f"providers:\n  - name: x\n    base_url: {url}\n    auth_value: k\n")
    assert "providers[0] (name 'x').base_url" in message
    assert "http" in message
    assert url in message


@pytest.mark.parametrize("url", ["https://example.com/api?key=1", "https://example.com/#frag"])
def test_base_url_with_query_or_fragment(tmp_path: Path, url: str) -> None:
    message = config_error(tmp_path, f"providers:\n  - name: x\n    base_url: '{url}'\n    auth_value: k\n")
    assert "providers[0] (name 'x').base_url" in message
    assert "query" in message


def test_missing_auth_value_for_api_key(tmp_path: Path) -> None:
    message = config_error(tmp_path, "providers:\n  - name: x\n    base_url: https://e.com\n")
    assert "providers[0] (name 'x')" in message
    assert "auth_value is required" in message


def test_a_provider_name_used_twice_is_an_error(tmp_path: Path) -> None:
    second = "  - name: x\n    base_url: https://other.example.com\n    auth_value: k\n"
    message = config_error(tmp_path, PROVIDER + second)
    assert "'x'" in message
    assert "twice" in message


def test_an_empty_providers_list_is_an_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "providers: []\n")
    assert "providers" in message
    assert "at least 1" in message


def test_a_file_without_providers_is_an_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "settings:\n  port: 8080\n")
    assert "providers" in message
    assert "missing" in message


def test_bad_setting_names_the_setting(tmp_path: Path) -> None:
    message = config_error(tmp_path, PROVIDER + "settings:\n  log_level: chatty\n  port: 70000\n")
    assert "settings.log_level" in message and "CHATTY" in message
    assert "settings.port" in message and "70000" in message


def test_a_file_that_is_a_yaml_list_is_refused_as_not_a_mapping(tmp_path: Path) -> None:
    message = config_error(tmp_path, "- name: x\n  base_url: https://e.com\n")
    assert "providers.yaml" in message
    assert "mapping" in message
    assert "list" in message


def test_yaml_syntax_error_mentions_the_line(tmp_path: Path) -> None:
    text = "providers:\n  - name: x\n    base_url: [https://e.com\n    auth_value: k\nsettings: {\n"
    message = config_error(tmp_path, text)
    assert "not valid YAML" in message
    assert "line " in message
    assert "providers.yaml" in message


def test_yaml_syntax_error_reports_the_right_line(tmp_path: Path) -> None:
    text = "providers:\n  - name: x\n\tbase_url: https://e.com\n"  # a tab on line 3
    message = config_error(tmp_path, text)
    assert "line 3" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n"])
def test_an_empty_file_is_an_error_that_asks_for_providers(tmp_path: Path, text: str) -> None:
    message = config_error(tmp_path, text)
    assert "empty" in message
    assert "providers" in message


def test_errors_carry_no_exception_chain(tmp_path: Path) -> None:
    for text in ["providers: [", PROVIDER + "    auth_type: bad\n", "providers:\n  - name: ${UNSET}\n"]:
        with pytest.raises(ConfigError) as caught:
            load_text(tmp_path, text)
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__


def test_parse_config_uses_the_given_source_name() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("providers: []\n", "my-source.yaml", {})
    assert str(caught.value).startswith("my-source.yaml: ")


# --- unknown keys ------------------------------------------------------------------------------------


def test_unknown_keys_are_warnings_not_errors(tmp_path: Path) -> None:
    text = PROVIDER + "    colour: red\nsettings:\n  colour: blue\nextra_section: {}\n"
    loaded = load_text(tmp_path, text)
    assert loaded.config.providers[0].name == "x"
    assert len(loaded.warnings) == 3
    joined = "\n".join(loaded.warnings)
    assert "providers[0] (x): unknown key 'colour'" in joined
    assert "'colour'" in joined and "settings" in joined
    assert "'extra_section'" in joined


def test_a_top_level_section_under_settings_is_said_to_belong_at_the_top(tmp_path: Path) -> None:
    # Indented one level too deep, routes would be ignored and routing would quietly stop.
    text = PROVIDER + "settings:\n  routes:\n    - {name: r, providers: [x]}\n"
    assert load_text(tmp_path, text).warnings == [
        "settings: unknown key 'routes' ignored ('routes' belongs at the top level of the file, not under settings)"]


def test_known_keys_give_no_warnings(tmp_path: Path) -> None:
    assert load_text(tmp_path, PROVIDER).warnings == []


# --- no file -----------------------------------------------------------------------------------------


def test_missing_file_gives_builtin_default(tmp_path: Path) -> None:
    loaded = load_config(tmp_path / "does-not-exist.yaml", environ={})
    assert loaded.source == DEFAULT_SOURCE == "built-in default"
    assert loaded.warnings == []
    (provider,) = loaded.config.providers
    assert provider.type == "anthropic"
    assert provider.base_url == "https://api.anthropic.com"
    assert provider.auth_type == "passthrough"
    assert provider.enabled
    assert provider.big_model is None and provider.small_model is None


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "dir.yaml", environ={})
    assert "cannot read" in str(caught.value)


def test_numeric_values_are_accepted_where_strings_are_expected() -> None:
    text = "providers:\n  - name: 7\n    base_url: http://h\n    auth_value: 12345\n    big_model: 4\n"
    provider = parse_config(text, "p.yaml", {}).config.providers[0]
    assert (provider.name, provider.auth_value, provider.big_model) == ("7", "12345", "4")


def test_a_bad_value_is_quoted_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("providers:\n  - name: a\n    base_url: ftp://h\n    auth_value: k\n", "p.yaml", {})
    assert str(caught.value).count("'ftp://h'") == 1


def test_hedge_after_is_off_unless_set_to_a_positive_number_of_seconds(tmp_path: Path) -> None:
    assert load_text(tmp_path, PROVIDER).config.settings.hedge_after is None
    assert load_text(tmp_path, PROVIDER + "settings:\n  hedge_after: 1.5\n").config.settings.hedge_after == 1.5
    for bad in ("0", "-1", ".inf", ".nan", "soon"):
        message = config_error(tmp_path, PROVIDER + f"settings:\n  hedge_after: {bad}\n")
        assert "settings.hedge_after" in message
