"""Second hostile review of the early upload (addon/early_upload.py): the guess's `_fit` must agree with what the
plan does with the provider it writes to. Where the plan puts that provider behind another one, a large body is
uploaded to it for nothing (and reset), once per request, while the plan keeps traffic off it on purpose."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from addon.early_upload import EARLY_ABOVE
from addon.http1_transport import EARLY, TAKEN, Http1Transport
from addon.request_body import SLICED_ABOVE, read_object, read_object_in_slices
from balancer_proc import BalancerProcess
from benchkit.kv_server import KeyValueServer, server_binary
from fakes import FakeProvider, Message, Status
from helpers import anthropic_provider, wait_until
from test_early_upload import transported, warm
from test_early_upload_hostile import counted, early_uploads, let_go, post, stops_reading

BIG = "x" * (EARLY_ABOVE + 10_000)


def body(content: object = BIG, model: str = "claude-sonnet-4") -> bytes:
    return json.dumps({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": content}]}).encode()


def test_no_bytes_go_early_to_a_provider_whose_only_key_is_short_of_headroom(
    balancer: BalancerProcess, unique: str
) -> None:
    """A key whose rate-limit headers left it under `settings.headroom` is passed over, and a provider with no
    other key is planned after the providers that have one (routing.plan_attempts, `ready`): the plan keeps
    traffic off it until its reset, before it answers 429. `_fit` does not look at the keys: the provider that
    served the client's last request gets every large request uploaded but for one byte, then reset."""
    near, other = f"near-{unique}", f"other-{unique}"
    reset = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    limits = {"anthropic-ratelimit-requests-limit": "100", "anthropic-ratelimit-requests-remaining": "1",
              "anthropic-ratelimit-requests-reset": reset}
    with FakeProvider() as first, FakeProvider() as second:
        first.then(Message(headers=limits))
        balancer.use([anthropic_provider(near, first.url), anthropic_provider(other, second.url)])
        assert post(balancer, body("hello")).headers["x-balancer-provider"] == near  # now 1% left: set aside
        wait_until(lambda: counted(balancer, near, "200") == 1, what="the first request's metrics")
        assert post(balancer, body()).headers["x-balancer-provider"] == other
        wait_until(lambda: counted(balancer, other, "200") == 1, what="the large request's metrics")
        assert early_uploads(balancer, near) == 0, "a whole body went early to the provider the plan set aside"


@pytest.mark.slow
@pytest.mark.skipif(server_binary() is None, reason="no Redis-compatible server here")
def test_no_bytes_go_early_to_a_provider_whose_probe_claim_is_being_asked_for(tmp_path: Path, unique: str) -> None:
    """With shared state, a provider whose cooldown ended is probed by the instance holding its claim: the first
    request that would use it asks for the claim in the background and plans the provider last meanwhile
    (probe_gate.ProbeGate.allow: "asking" counts as being probed). The guess asks `board.is_probing`, which sees
    only a claim held by another instance (ProbeGate.elsewhere): a claim being asked for, or not asked for yet,
    lets the whole body go to the provider the plan then passes over."""
    p, q = f"p-{unique}", f"q-{unique}"
    with KeyValueServer() as kv, FakeProvider() as first, FakeProvider() as second:
        instance = BalancerProcess(tmp_path / "instance")
        instance.workdir.mkdir(parents=True, exist_ok=True)
        instance.write_providers([{"name": "placeholder", "base_url": "http://127.0.0.1:9", "auth_value": "x"}])
        with instance:
            instance.use([anthropic_provider(p, first.url), anthropic_provider(q, second.url)],
                         failure_cooldown=0, failure_rate=0.1, shared_state=kv.url,
                         shared_state_namespace=f"early-{unique}")
            wait_until(lambda: httpx.get(instance.url + "/providers", timeout=10).json()["shared_state"]["connected"]
                       is True, what="the instance connected to the server")
            assert post(instance, body("hello")).headers["x-balancer-provider"] == p  # p served this model
            first.then(Status(500))
            # Another model fails at p (a cooldown of 0 s) and goes to q: p is to be probed by whoever holds its claim.
            assert post(instance, body("hi", model="claude-haiku-4")).headers["x-balancer-provider"] == q
            wait_until(lambda: instance.provider_status(p)["consecutive_failures"] == 1, what="p's failure")
            assert post(instance, body()).headers["x-balancer-provider"] == q  # p is planned last: no claim yet
            wait_until(lambda: counted(instance, q, "200") >= 2, what="the large request's metrics")
            assert len(first.message_requests) == 2  # the plan kept the request off p
            assert early_uploads(instance, p) == 0, "a whole body went early to a provider awaiting its probe claim"


def one_model_member(sent: bytes) -> list[str]:
    """The values of every top-level `model` member of a JSON object, in order."""
    models: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        models.extend(str(v) for k, v in items if k == "model" and isinstance(v, str) and v.startswith("claude"))
        return dict(items)

    json.loads(sent, object_pairs_hook=pairs)
    return models


def test_a_body_read_in_slices_names_the_model_it_repeats_only_once_as_one_read_whole_does() -> None:
    """request_body.read_object gives no span when `model` comes twice (with_model then writes the body out with one
    `model`); read_object_in_slices, for bodies over 2 MB, gives the span of the last one. Exchange.body_for then
    changes the last value only and the provider gets both members: one that keeps the first serves another model
    than the one the balancer routed, mapped and counted by (model_field.with_model's own warning)."""
    repeated = b'{"model": "claude-opus-4", "max_tokens": 8, "model": "claude-sonnet-4", "messages": []}'
    parsed, span = read_object(repeated)
    assert span is None
    sliced = asyncio.run(read_object_in_slices(repeated))
    assert sliced == (parsed, None)


def test_a_provider_gets_one_model_member_for_a_large_body_that_repeats_it(
    balancer: BalancerProcess, unique: str
) -> None:
    """The same through the balancer: a body over request_body.SLICED_ABOVE whose `model` comes twice reaches the
    provider with both (the early upload's guess shares this span: Exchange.body_for keys on it)."""
    large = ("x" * (SLICED_ABOVE + 10_000))
    sent = (b'{"model": "claude-opus-4", "max_tokens": 8, "model": "claude-sonnet-4", "messages": [{"role": "user", '
            b'"content": "' + large.encode() + b'"}]}')
    with FakeProvider() as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)])
        answer = post(balancer, sent)
        assert answer.status_code == 200, answer.text
        received = fake.message_requests[0].body
    assert one_model_member(received) == ["claude-sonnet-4"], "the provider got the body with two `model` members"


def test_a_taken_connection_whose_last_byte_times_out_is_let_go_even_when_the_provider_reads_no_more() -> None:
    """The request taking the early connection writes its last byte behind megabytes that `write_early` handed to
    asyncio at once (no drain). To a provider that stopped reading, that write times out, and the failure path
    closes the connection with asyncio's close(), which first writes out what is still buffered: never, here. The
    descriptor and the megabytes stay held with no deadline (abandon and decline reset instead), and the provider
    would get the complete request if it ever read again, after the request failed over elsewhere."""
    large = body("y" * (8 * 1024 * 1024))
    with stops_reading() as url:
        async def scenario(client: httpx.AsyncClient, transport: Http1Transport) -> None:
            await warm(client, url)
            request = client.build_request("POST", url + "/v1/messages", content=large,
                                           timeout=httpx.Timeout(60, write=1.0))
            written = transport.write_early(request)
            assert written is not None
            connection = written._connection
            assert connection is not None
            request.extensions[EARLY] = written
            with pytest.raises(httpx.WriteTimeout):
                await client.send(request)
            assert written.outcome == TAKEN
            await let_go(connection, "the failed connection")

        transported(scenario)
