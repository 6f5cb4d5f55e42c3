"""scripts/benchkit/peer_ccr.py: claude-code-router's config, and the router itself in front of the fake (when
node is installed; the pinned package is installed into .bench/ccr from the committed lock on first use)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from benchkit import loadgen, peer_ccr
from benchkit.fake_provider import STREAM_PIECES
from benchkit.processes import FakeProvider

pytestmark = pytest.mark.bench


def test_config_has_logging_off_one_provider_per_route_and_the_first_as_default():
    config = peer_ccr.router_config({"Anthropic-OK": ("anthropic", "http://127.0.0.1:9/ok"),
                                     "openai-ok": ("openai", "http://127.0.0.1:9/ok/v1/")}, 4321)
    assert config["LOG"] is False and config["HOST"] == "127.0.0.1" and config["PORT"] == 4321
    assert "APIKEY" not in config  # no key check: the balancer does not authenticate its clients either
    anthropic, openai = config["Providers"]
    assert anthropic == {"name": "anthropic-ok", "api_base_url": "http://127.0.0.1:9/ok/v1/messages",
                         "api_key": "bench-dummy-key", "models": ["claude-sonnet-4"],
                         "transformer": {"use": ["Anthropic"]}}  # passthrough
    assert openai["api_base_url"] == "http://127.0.0.1:9/ok/v1/chat/completions"
    assert "transformer" not in openai  # the router's default: translation to Chat Completions
    assert config["Router"] == {"default": "anthropic-ok,claude-sonnet-4"}
    assert peer_ccr.model_for("Anthropic-OK") == "anthropic-ok,claude-sonnet-4"


def test_the_pinned_version_is_the_locked_one():
    here = Path(peer_ccr.__file__).parent / "ccr"
    lock = json.loads((here / "package-lock.json").read_text())
    assert lock["packages"][f"node_modules/{peer_ccr.PACKAGE}"]["version"] == peer_ccr.pinned_version() == "2.0.0"


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="needs node and npm")
def test_router_passes_anthropic_through_and_translates_openai():
    with FakeProvider() as fake, peer_ccr.RouterProxy({"anthropic-ok": ("anthropic", fake.anthropic()),
                                                       "openai-ok": ("openai", fake.openai())}) as router:
        router.start()
        home = router.home
        assert home is not None and (home / ".claude-code-router" / "config.json").exists()
        for route in ("anthropic-ok", "openai-ok"):
            model = peer_ccr.model_for(route)
            timings, errors = asyncio.run(loadgen.measure(router.url, "/v1/messages",
                                                          loadgen.request_body(True, model), 2, 1))
            assert errors == 0, route
            assert all(len(t.event_times) >= STREAM_PIECES + 4 for t in timings), route
            assert all(t.first_content >= t.first_event for t in timings)
            timings, errors = asyncio.run(loadgen.measure(router.url, "/v1/messages",
                                                          loadgen.request_body(False, model), 2, 1))
            assert errors == 0, route
        pid = router.pid
    assert router.proc is None and not home.exists()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
