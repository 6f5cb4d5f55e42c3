"""Failover through the real mitmdump: every failure class, streamed and not; cooldowns; exhaustion."""

from __future__ import annotations

import threading
import time

import anthropic
import httpx
import pytest

from balancer_proc import BalancerProcess
from fakes import Blackhole, BrokenBody, FakeProvider, Hang, Message, Reset, Status, Stream
from helpers import FIRST_DELTA, anthropic_provider, free_port, served_by
from tls import self_signed_server_context

MESSAGES = [{"role": "user", "content": "Hi"}]

FAILURES = {
    "refused": None,  # the provider's port has nothing listening
    "reset": Reset,
    "timeout": Hang,
    **{f"http-{code}": (lambda code=code: Status(code)) for code in (408, 429, 500, 502, 503, 504, 529)},
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_first_failure_fails_over_and_cools_the_provider_down(balancer, client, unique, failure, stream):
    make = FAILURES[failure]
    with FakeProvider(default=make() if make else Message()) as bad, FakeProvider(Message("from b")) as good:
        bad_url = bad.url if make else f"http://127.0.0.1:{free_port()}"
        balancer.use(
            [anthropic_provider(f"a-{unique}", bad_url), anthropic_provider(f"b-{unique}", good.url)],
            request_timeout=1, failure_cooldown=600,
        )
        assert served_by(client, stream) == (f"b-{unique}", "from b")

        status = balancer.provider_status(f"a-{unique}")
        assert status["healthy"] is False
        assert 590 < status["cooldown_remaining"] <= 600
        assert status["failures"] == 1
        expected = {"refused": "connection refused", "reset": "connection", "timeout": "no response headers within 1s"}
        assert expected.get(failure, f"HTTP {failure.removeprefix('http-')}") in status["last_error"]

        # While it cools down, requests go straight to the next provider.
        sent_to_bad = len(bad.requests)
        assert served_by(client, stream) == (f"b-{unique}", "from b")
        assert len(bad.requests) == sent_to_bad
        assert balancer.provider_status(f"b-{unique}")["failures"] == 0


def test_stream_after_failover_is_still_live(balancer, client, unique):
    gate = threading.Event()
    behavior = Stream(pieces=["live", "!"], gate=gate, gate_after=FIRST_DELTA + 1)
    with FakeProvider(Status(529)) as bad, FakeProvider(behavior) as good:
        balancer.use([anthropic_provider(f"a-{unique}", bad.url), anthropic_provider(f"b-{unique}", good.url)])
        with client.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=MESSAGES) as stream:
            events = iter(stream)
            assert next(events).type == "message_start"
            assert next(e for e in events if e.type == "content_block_delta").delta.text == "live"
            assert not behavior.finished.is_set()
            gate.set()
            final = stream.get_final_message()
        assert behavior.gate_timed_out is False
        assert final.content[0].text == "live!"
        assert len(bad.requests) == 1


@pytest.mark.parametrize("status", [400, 413, 422])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_client_errors_are_returned_and_do_not_count(balancer, client, unique, status, stream):
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad request {status}"}}
    with FakeProvider(Status(status, body)) as first, FakeProvider() as second:
        balancer.use([anthropic_provider(f"a-{unique}", first.url), anthropic_provider(f"b-{unique}", second.url)])
        with pytest.raises(anthropic.APIStatusError) as caught:
            served_by(client, stream)
        assert caught.value.status_code == status
        assert caught.value.body == body
        assert second.requests == []
        health = balancer.provider_status(f"a-{unique}")
        assert (health["healthy"], health["failures"], health["last_error"]) == (True, 0, None)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_connect_that_hangs_fails_over_within_request_timeout(balancer, client, unique, stream):
    with Blackhole() as blackhole, FakeProvider(Message("from b")) as good:
        balancer.use([anthropic_provider(f"a-{unique}", blackhole.url), anthropic_provider(f"b-{unique}", good.url)],
                     request_timeout=1)
        assert served_by(client, stream) == (f"b-{unique}", "from b")
        health = balancer.provider_status(f"a-{unique}")
        assert health["failures_by_class"] == {"timeout": 1}


# A host name that can never resolve, and fails inside the local resolver without any query leaving the
# machine (a DNS label is at most 63 characters).
UNRESOLVABLE = "http://" + "x" * 64 + ".invalid"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("failure", ["tls", "dns"])
def test_tls_and_dns_failures_fail_over(balancer, client, unique, tmp_path, failure, stream):
    with FakeProvider(tls=self_signed_server_context(tmp_path)) as untrusted, FakeProvider(Message("from b")) as good:
        bad_url = untrusted.url if failure == "tls" else UNRESOLVABLE
        balancer.use([anthropic_provider(f"a-{unique}", bad_url), anthropic_provider(f"b-{unique}", good.url)])
        assert served_by(client, stream) == (f"b-{unique}", "from b")
        health = balancer.provider_status(f"a-{unique}")
        assert ("TLS error" if failure == "tls" else "DNS error") in health["last_error"]
        assert health["failures_by_class"] == {"transport": 1}


def test_all_failing_with_an_overload_gives_529_in_anthropic_shape(balancer, client, unique):
    with FakeProvider(Status(529)) as overloaded:
        refused = f"http://127.0.0.1:{free_port()}"
        balancer.use([anthropic_provider(f"a-{unique}", overloaded.url), anthropic_provider(f"b-{unique}", refused)],
                     failure_cooldown=600, all_cooling="refuse")
        response = httpx.post(balancer.url + "/v1/messages", json={"model": "claude-sonnet-4", "max_tokens": 8,
                                                                    "messages": MESSAGES}, timeout=10)
        assert response.status_code == 529
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-balancer-provider"] == "none"
        assert response.headers["retry-after"] == "60"  # both cool down 600 s: Claude Code gives up above 60
        error = response.json()
        assert error["type"] == "error"
        assert error["error"]["type"] == "overloaded_error"
        message = error["error"]["message"]
        assert f"a-{unique}: HTTP 529 overloaded_error" in message
        assert f"b-{unique}: connection refused" in message

        # Now both cool down: the next request is refused at once, saying why, without touching the providers.
        with pytest.raises(anthropic.APIStatusError) as caught:
            served_by(client, stream=True)
        assert caught.value.status_code == 529
        assert "cooling down" in caught.value.message
        assert len(overloaded.requests) == 1
        assert httpx.get(balancer.url + "/", timeout=10).status_code == 503


def test_all_refused_is_an_api_error(balancer, unique):
    balancer.use([anthropic_provider(f"a-{unique}", f"http://127.0.0.1:{free_port()}")])
    response = httpx.post(balancer.url + "/v1/messages", json={"model": "claude-sonnet-4", "max_tokens": 8,
                                                                "messages": MESSAGES}, timeout=10)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "api_error"


def test_provider_comes_back_after_its_cooldown(balancer, client, unique):
    with FakeProvider(Message("from a")) as first, FakeProvider(Message("from b")) as second:
        first.then(Status(500))
        balancer.use([anthropic_provider(f"a-{unique}", first.url), anthropic_provider(f"b-{unique}", second.url)],
                     failure_cooldown=0.5)
        assert served_by(client, stream=False) == (f"b-{unique}", "from b")
        deadline = time.monotonic() + 10
        while not balancer.provider_status(f"a-{unique}")["healthy"]:
            assert time.monotonic() < deadline, "the provider never left its cooldown"
            time.sleep(0.05)
        assert served_by(client, stream=False) == (f"a-{unique}", "from a")


def test_disabled_provider_is_never_used(balancer, client, unique):
    with FakeProvider() as disabled, FakeProvider(Message("from b")) as enabled:
        balancer.use([anthropic_provider(f"a-{unique}", disabled.url, enabled=False),
                      anthropic_provider(f"b-{unique}", enabled.url)])
        assert served_by(client, stream=False) == (f"b-{unique}", "from b")
        assert disabled.requests == []


def test_count_tokens_failures_do_not_cool_down(balancer, client, unique):
    with FakeProvider(Status(500)) as first, FakeProvider() as second:
        balancer.use([anthropic_provider(f"a-{unique}", first.url), anthropic_provider(f"b-{unique}", second.url)])
        assert client.messages.count_tokens(model="claude-sonnet-4", messages=MESSAGES).input_tokens == 42
        health = balancer.provider_status(f"a-{unique}")
        assert (health["healthy"], health["failures"]) == (True, 0)


@pytest.mark.parametrize("failure", ["answer-breaks-off", "error-body-stalls"])
def test_broken_or_stalled_bodies_fail_over_in_time(balancer, client, unique, failure):
    """A non-streamed answer that breaks off mid-body fails over (never mitmproxy's own 502); an error status
    whose body never ends fails over within request_timeout, not stream_idle_timeout."""
    bad = BrokenBody(200, "drop") if failure == "answer-breaks-off" else BrokenBody(529, "stall")
    with FakeProvider(bad) as broken, FakeProvider(Message("from b")) as good:
        balancer.use([anthropic_provider(f"a-{unique}", broken.url), anthropic_provider(f"b-{unique}", good.url)],
                     request_timeout=1, stream_idle_timeout=30)
        assert served_by(client, stream=False) == (f"b-{unique}", "from b")
        health = balancer.provider_status(f"a-{unique}")
        assert health["failures"] == 1


@pytest.mark.parametrize("option", ["ssl_verify_upstream_trusted_ca", "ssl_insecure"])
def test_mitmproxy_tls_options_apply_to_provider_connections(tmp_path, option):
    """A provider with a private CA works when mitmproxy is told to trust that CA (or not to verify)."""
    context = self_signed_server_context(tmp_path)
    value = str(tmp_path / "cert.pem") if option == "ssl_verify_upstream_trusted_ca" else "true"
    with FakeProvider(Message("over TLS"), tls=context) as private:
        balancer = BalancerProcess(tmp_path, extra_args=("--set", f"{option}={value}"))
        balancer.write_providers([anthropic_provider("private", private.url)])
        with balancer, anthropic.Anthropic(base_url=balancer.url, api_key="c", max_retries=0) as client:
            assert served_by(client, stream=False) == ("private", "over TLS")
