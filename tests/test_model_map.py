"""Unit tests for addon/model_map.py: which model a provider is asked for."""

from __future__ import annotations

import pytest

from addon.config import ProviderConfig
from addon.model_map import ModelChoice, choose_model, tier_of


def provider(big: str | None = "BIG-MODEL", small: str | None = "SMALL-MODEL") -> ProviderConfig:
    return ProviderConfig(name="p", base_url="https://example.com", auth_value="k", big_model=big, small_model=small)


@pytest.mark.parametrize(
    "requested",
    [
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        "claude-3-opus-20240229",
        "claude-sonnet-4-5",
        "claude-sonnet-4-20250514",
        "claude-3-7-sonnet-latest",
        "Claude-OPUS-4",
        "CLAUDE-SONNET-4-5",
    ],
)
def test_opus_and_sonnet_use_big_model(requested: str) -> None:
    assert choose_model(requested, provider()) == ModelChoice(model="BIG-MODEL", tier="big", tier_known=True)


@pytest.mark.parametrize(
    "requested",
    ["claude-3-5-haiku-20241022", "claude-haiku-4-5", "claude-3-haiku-20240307", "Claude-3-5-HAIKU-latest"],
)
def test_haiku_uses_small_model(requested: str) -> None:
    assert choose_model(requested, provider()) == ModelChoice(model="SMALL-MODEL", tier="small", tier_known=True)


@pytest.mark.parametrize("requested", ["gpt-4o", "claude-2.1", "claude-instant-1.2", "some-custom-model", ""])
def test_other_names_fall_back_to_big_tier_not_known(requested: str) -> None:
    assert choose_model(requested, provider()) == ModelChoice(model="BIG-MODEL", tier="big", tier_known=False)


def test_tier_of_opus_and_sonnet_is_big_haiku_small_an_unknown_model_big_unmatched() -> None:
    assert tier_of("claude-opus-4-1") == ("big", True)
    assert tier_of("claude-sonnet-4-5") == ("big", True)
    assert tier_of("claude-3-5-haiku-20241022") == ("small", True)
    assert tier_of("mystery") == ("big", False)


@pytest.mark.parametrize(
    ("requested", "tier"),
    [("claude-sonnet-4-5", "big"), ("claude-opus-4-1", "big"), ("claude-3-5-haiku-20241022", "small")],
)
def test_no_model_configured_keeps_requested_model(requested: str, tier: str) -> None:
    choice = choose_model(requested, provider(big=None, small=None))
    assert choice == ModelChoice(model=requested, tier=tier, tier_known=True)


def test_only_the_unconfigured_tier_passes_through() -> None:
    only_big = provider(big="BIG-MODEL", small=None)
    assert choose_model("claude-3-5-haiku-20241022", only_big).model == "claude-3-5-haiku-20241022"
    assert choose_model("claude-sonnet-4-5", only_big).model == "BIG-MODEL"

    only_small = provider(big=None, small="SMALL-MODEL")
    assert choose_model("claude-sonnet-4-5", only_small).model == "claude-sonnet-4-5"
    assert choose_model("claude-3-5-haiku-20241022", only_small).model == "SMALL-MODEL"


def test_passthrough_spelling_in_provider_keeps_requested_model() -> None:
    choice = choose_model("claude-opus-4-1", provider(big="passthrough", small="passthrough"))
    assert choice.model == "claude-opus-4-1"


def test_unknown_name_with_no_big_model_is_passed_unchanged() -> None:
    choice = choose_model("my-finetune", provider(big=None))
    assert choice == ModelChoice(model="my-finetune", tier="big", tier_known=False)
