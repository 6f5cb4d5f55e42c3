"""With `auth_type: passthrough` the client's own key goes to the provider, and the providers' redactor does not
know it: a provider that echoes it in an error must not put it in a reason (the log line, /providers)."""

from __future__ import annotations

import json

import httpx

from addon.redact import REDACTED, Redactor, client_secrets, with_secrets
from fakes import FakeProvider, Message, Status
from helpers import anthropic_provider, wait_until

BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
SECRET = "sk-ant-client-OWNKEY-0123456789abcdef"


def test_client_secrets_are_its_api_key_and_its_bearer_token() -> None:
    headers = [("X-Api-Key", f" {SECRET} "), ("Authorization", "Bearer tok-0123456789"), ("x-title", "café"),
               ("authorization", "short")]
    assert client_secrets(headers) == (SECRET, "tok-0123456789")
    redact = with_secrets(Redactor(["provider-key-000000"]), client_secrets(headers))
    assert redact(f"echo {SECRET} and provider-key-000000") == f"echo {REDACTED} and {REDACTED}"
    assert with_secrets(Redactor(), (SECRET,)) is not None


def test_a_passthrough_providers_echo_of_the_clients_key_is_in_no_reason(balancer, unique) -> None:
    echo = {"type": "error", "error": {"type": "api_error", "message": f"bad key {SECRET} (and {SECRET[:20]})"}}
    with FakeProvider(Status(500, echo)) as bad, FakeProvider(Message("from b")) as good:
        a, b = f"a-{unique}", f"b-{unique}"
        balancer.use([anthropic_provider(a, bad.url, auth_type="passthrough"),
                      anthropic_provider(b, good.url, auth_type="passthrough")])
        response = httpx.post(balancer.url + "/v1/messages", json=BODY, headers={"x-api-key": SECRET}, timeout=30)
        assert response.status_code == 200 and response.headers["x-balancer-provider"] == b
        assert bad.requests and bad.requests[0].headers.get("x-api-key") == SECRET  # it was passed through
        status = balancer.provider_status(a)
        assert "HTTP 500" in status["last_error"] and REDACTED in status["last_error"]
        wait_until(lambda: any(f"{a} HTTP 500" in line for line in balancer.log_lines), what="the request's line")
        pieces = [SECRET[i : i + 8] for i in range(len(SECRET) - 7)]
        assert not any(piece in json.dumps(status) or piece in balancer.log for piece in pieces)
