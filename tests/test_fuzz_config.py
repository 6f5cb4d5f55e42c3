"""Property tests (hypothesis): the providers file, valid, mutated and garbage YAML."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st

from addon.config import ConfigError, parse_config
from fuzzing import ENVIRON, MODELS, _has_surrogates, maybe, mutated, odd_text, quick_and_deep, weighted

# The huge strings some examples hold make hypothesis warn about the size of their repr; nothing else.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


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


YAML_PIECES = ["providers:", "settings:", "  - name: a", "    base_url: http://x", "  -", "- ",
               "    auth_value: ${KEY}",
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
                  st.one_of(st.sampled_from([*YAML_PIECES, " ", "\n", ":", "-", "  "]), st.text(max_size=3)))),
    (1, st.lists(st.sampled_from(YAML_PIECES), max_size=12).map("\n".join)),
    (1, st.text(max_size=100)),
)


@quick_and_deep(300, text=yaml_texts)
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
