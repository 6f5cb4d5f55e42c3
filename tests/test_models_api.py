"""GET /v1/models in Anthropic's shape, as the official SDK reads it."""

from __future__ import annotations

import anthropic
import pytest

from addon.config import DEFAULT_MODELS, parse_config
from addon.models_api import model_list
from helpers import anthropic_provider, openai_provider


def test_model_list_offers_the_tiers_and_the_mapped_models():
    config = parse_config(
        "providers:\n"
        "  - {name: a, base_url: 'http://h', auth_value: k, big_model: big-a, small_model: small-a}\n"
        "  - {name: b, base_url: 'http://h', auth_value: k, big_model: big-a}\n"
        "  - {name: c, base_url: 'http://h', auth_value: k, big_model: retired, enabled: false}\n",
        "p.yaml", {},
    ).config
    listing = model_list(config)
    ids = [m["id"] for m in listing["data"]]
    assert ids == [*DEFAULT_MODELS, "big-a", "small-a"]
    assert listing["has_more"] is False
    assert (listing["first_id"], listing["last_id"]) == (ids[0], ids[-1])
    assert all(m["type"] == "model" and m["created_at"] for m in listing["data"])


def test_the_sdk_lists_and_retrieves_models_through_the_balancer(balancer, fakes, client, unique):
    balancer.use([anthropic_provider(f"a-{unique}", fakes[0].url, big_model="big-model"),
                  openai_provider(f"o-{unique}", fakes[1].url)], models=["claude-sonnet-4-6"])
    ids = [m.id for m in client.models.list()]
    assert ids == ["claude-sonnet-4-6", "big-model", "gpt-big", "gpt-small"]
    assert client.models.retrieve("gpt-small").display_name == f"gpt-small (o-{unique}, small tier)"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("no-such-model")
    assert all(f.requests == [] for f in fakes)  # answered by the balancer itself
