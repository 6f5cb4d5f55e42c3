"""Live reload: the providers file is watched; a broken edit is reported and the running setup kept."""

from __future__ import annotations

import threading

import httpx

from balancer_proc import providers_yaml
from fakes import FakeProvider, Stream
from helpers import FIRST_DELTA, anthropic_provider, wait_until


def names(balancer) -> list[str]:
    return [p["name"] for p in httpx.get(balancer.url + "/providers", timeout=10).json()["providers"]]


def test_an_edited_file_is_picked_up_without_a_request(balancer, fakes, client, unique):
    balancer.use([anthropic_provider(f"a-{unique}", fakes[0].url)])
    balancer.providers_file.write_text(providers_yaml([anthropic_provider(f"b-{unique}", fakes[1].url)]))
    wait_until(lambda: names(balancer) == [f"b-{unique}"], timeout=10, what="the edit to be picked up")
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4", max_tokens=8,
                                                   messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-balancer-provider"] == f"b-{unique}"


def test_a_broken_edit_is_reported_and_the_running_setup_kept(balancer, fakes, client, unique):
    balancer.use([anthropic_provider(f"a-{unique}", fakes[0].url)])
    seen = len(balancer.log_lines)
    balancer.providers_file.write_text(f"providers:\n  - name: broken-{unique}\n")
    wait_until(lambda: any("cannot be used; the running configuration is kept" in line
                           for line in balancer.log_lines[seen:]), timeout=10, what="the error to be logged")
    assert names(balancer) == [f"a-{unique}"]
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4", max_tokens=8,
                                                   messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-balancer-provider"] == f"a-{unique}"


def test_requests_in_flight_finish_on_the_provider_they_started_on(balancer, fakes, client, unique):
    gate = threading.Event()
    with FakeProvider(Stream(pieces=["started", " and finished"], gate=gate, gate_after=FIRST_DELTA + 1)) as old:
        balancer.use([anthropic_provider(f"old-{unique}", old.url)])
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8,
                                    messages=[{"role": "user", "content": "x"}]) as stream:
            events = iter(stream)
            assert next(e for e in events if e.type == "content_block_delta").delta.text == "started"
            balancer.providers_file.write_text(providers_yaml([anthropic_provider(f"new-{unique}", fakes[1].url)]))
            wait_until(lambda: names(balancer) == [f"new-{unique}"], timeout=10, what="the reload")
            gate.set()
            final = stream.get_final_message()
            assert stream.response.headers["x-balancer-provider"] == f"old-{unique}"
        assert final.content[0].text == "started and finished"
