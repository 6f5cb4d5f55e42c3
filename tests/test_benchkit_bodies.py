"""scripts/benchkit/bodies.py: request bodies of an exact size, shaped like Claude Code's."""

from __future__ import annotations

import json

import pytest

from benchkit.bodies import SIZES, body, sized_request

pytestmark = pytest.mark.bench


@pytest.mark.parametrize("size", SIZES.values())
def test_bodies_have_the_exact_size_and_claude_codes_shape(size):
    for stream in (False, True):
        data = body(size, stream)
        assert len(data) == size
        request = json.loads(data)
        assert request["stream"] is stream and request["model"] == "claude-sonnet-4"
        assert request["messages"][0]["role"] == "user" and request["system"][0]["type"] == "text"
    if size >= 100_000:
        request = json.loads(body(size, False))
        assert len(request["tools"]) == 20 and len(request["messages"]) > 10  # tools and a long conversation


def test_the_model_names_a_peers_route_without_changing_the_size():
    assert len(body(100_000, True, "anthropic-ok,claude-sonnet-4")) == 100_000
    assert sized_request(2_000, False, "m")["model"] == "m"
