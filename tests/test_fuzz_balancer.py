"""Property tests (hypothesis): the running balancer (mitmdump and the addon) fed fuzzed client requests, against
an Anthropic-type and an OpenAI-type fake provider."""

from __future__ import annotations

import collections
import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st

from fakes import Behavior, FakeProvider, _Handler
from fuzzing import (
    CUT_EMOJI,
    DEEP,
    FUZZ_SCALE,
    MODELS,
    _same,
    anthropic_bodies,
    bodies_with_tools,
    depths,
    fuzz_settings,
    json_values,
    mutated,
    valid_ish_bodies,
    weighted,
)
from helpers import (
    anthropic_message,
    anthropic_provider,
    anthropic_stream_events,
    assert_stream_grammar,
    openai_provider,
    parse_sse,
    sse,
    wait_until,
)

# The huge strings some examples hold make hypothesis warn about the size of their repr; nothing else.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


class _AnyMethodHandler(_Handler):
    """The fakes' handler answering every method (the balancer forwards any method of other `/v1/` paths)."""

    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _Handler._handle


def _any_method_fake(behavior: Behavior) -> FakeProvider:
    fake = FakeProvider(behavior)
    fake._server.RequestHandlerClass = _AnyMethodHandler
    return fake.start()


def _head_or_reply(handler, request, status: int, body: dict) -> None:
    if request.method == "HEAD":
        handler.send_response(status)
        handler.send_header("content-length", "0")
        handler.end_headers()
    else:
        handler.reply(status, body)


def _error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


class AnthropicAnswers(Behavior):
    """What Anthropic's API does, roughly: messages, counts, 400 for a body it cannot read, 404 elsewhere."""

    def run(self, handler, request, fake):
        route = request.path.split("?", 1)[0]
        try:
            body = json.loads(request.body) if request.body else None
        except (ValueError, RecursionError):
            body = None
        if route not in ("/v1/messages", "/v1/messages/count_tokens"):
            _head_or_reply(handler, request, 404, _error("not_found_error", f"{request.method} {route}"))
        elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
            _head_or_reply(handler, request, 400, _error("invalid_request_error", "bad body"))
        elif route == "/v1/messages/count_tokens":
            handler.reply(200, {"input_tokens": 42})
        elif body.get("stream") is True:
            handler.stream([sse(e, d) for e, d in anthropic_stream_events(body["model"], ["Hel", "lo"])])
        else:
            handler.reply(200, anthropic_message(body["model"], "Hello"))


class OpenAIAnswers(Behavior):
    """An OpenAI-compatible server: a completion (or its stream) for any readable chat request."""

    def run(self, handler, request, fake):
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            body = None
        if request.path.split("?", 1)[0] != "/v1/chat/completions" or not isinstance(body, dict):
            _head_or_reply(handler, request, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        if body.get("stream"):
            chunks = [
                {"id": "chatcmpl-f", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
                {"id": "chatcmpl-f", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
                {"id": "chatcmpl-f", "choices": [], "usage": usage},
            ]
            handler.stream([b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"])
        else:
            handler.reply(200, {"id": "chatcmpl-f", "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]})


@pytest.fixture(scope="module")
def anthropic_fake():
    fake = _any_method_fake(AnthropicAnswers())
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def openai_fake():
    fake = _any_method_fake(OpenAIAnswers())
    yield fake
    fake.stop()


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "text/event-stream", "application/octet-stream", "", "*/*",
                 "application/json; charset=latin-1", "\x7f"]


METHODS = ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "POST"]


OTHER_PATHS = ["/", "/providers", "/providers/reload", "/metrics", "/v1", "/v1/", "/v1/models",
               "/v1/models/claude-sonnet-4-5", "/v1/models/nope", "/v1/complete", "/v1/messages/batches",
               "/v1/messages/", "/v1//messages", "/v1/messages/count_tokens/x", "/v2/messages", "/favicon.ico",
               "/v1/files", "/v1/../providers", "/%2e%2e/v1/messages", "/v1/messages%00", "/v1/%ff", "/ä",
               "/__balancer__/x", "/v1/chat/completions"]


path_segment = st.text(st.sampled_from("abcxyz019-_.~%2F"), min_size=1, max_size=8)

queries = st.sampled_from(["", "", "", "?beta=true", "?a=%ff&b", "?" + "x" * 300, "?stream=true"])


def one_in(n: int, rare: bool = True) -> st.SearchStrategy[bool]:
    """`rare` once in n draws. (Hypothesis prefers the simplest choice, so `integers(0, n) == 0` would be far more
    frequent than 1/n; the first element of `sampled_from` is the simplest.)"""
    return st.sampled_from([not rare] * (n - 1) + [rare])


def servable(body: dict) -> dict:
    """The body with the top-level shape every Messages request needs (the balancer answers 400 without it);
    whatever is inside the content blocks stays as generated."""
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    body["messages"] = [
        m for m in messages
        if isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")
        and isinstance(m.get("content"), (str, list))
    ]
    for key, kinds in (("system", (str, list)), ("tools", list)):
        if key in body and not isinstance(body[key], kinds):
            del body[key]
    return body


def _raw_json(body: Any, ensure_ascii: bool) -> bytes:
    return json.dumps(body, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


@st.composite
def client_requests(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(st.sampled_from(["messages"] * 6 + ["count"] * 3 + ["other"] * 2 + ["random"]))
    if target == "messages":
        method, path = draw(st.sampled_from(["POST"] * 9 + METHODS)), "/v1/messages"
    elif target == "count":
        method, path = draw(st.sampled_from(["POST"] * 9 + METHODS)), "/v1/messages/count_tokens"
    elif target == "other":
        method, path = draw(st.sampled_from(METHODS)), draw(st.sampled_from(OTHER_PATHS))
    else:
        method = draw(st.sampled_from(METHODS))
        prefix = draw(st.sampled_from(["/v1/", "/v1/messages/", "/", "/providers/"]))
        path = prefix + "/".join(draw(st.lists(path_segment, min_size=1, max_size=3)))
    path += draw(queries)
    kind = draw(st.sampled_from(["servable"] * 10 + ["json"] * 3 + ["bytes", "non_object", "raw_utf8", "empty",
                                                                     "truncated", "deep"]))
    if kind == "servable":  # gets past the balancer's own checks, so providers are tried and answers relayed
        body = servable(draw(weighted((2, valid_ish_bodies), (2, bodies_with_tools), (1, mutated(valid_ish_bodies)),
                                      (1, mutated(bodies_with_tools)))))
        body["model"] = draw(st.sampled_from(MODELS[:5]))
        body["max_tokens"] = draw(st.sampled_from([1, 64, 4096, 2**31]))
        body["stream"] = draw(st.booleans())
        content = _raw_json(body, ensure_ascii=draw(one_in(6, False)))
    elif kind == "json":
        content = _raw_json(draw(anthropic_bodies), ensure_ascii=True)
    elif kind == "raw_utf8":  # not escaped: a lone surrogate becomes bytes that are not UTF-8
        content = _raw_json(draw(anthropic_bodies), ensure_ascii=False)
    elif kind == "non_object":
        content = _raw_json(draw(json_values), ensure_ascii=True)
    elif kind == "truncated":
        full = _raw_json(draw(valid_ish_bodies), ensure_ascii=True)
        content = full[: draw(st.integers(0, max(0, len(full) - 1)))]
    elif kind == "deep":
        content = b'{"model": "claude-sonnet-4-5", "messages": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    elif kind == "empty":
        content = b""
    else:
        content = draw(st.binary(max_size=200))
    headers: list[tuple[bytes, bytes]] = []
    content_type = draw(st.sampled_from([*CONTENT_TYPES, None, None]))
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    if draw(one_in(20)):
        headers.append((b"content-encoding", draw(st.sampled_from([b"gzip", b"br", b"deflate", b"zstd", b"identity",
                                                                   b"x-junk"]))))
    credential = draw(st.sampled_from([None, None, b"client-key", b"k\xff\xfe", b"\xc3\xa4-key", b"Bearer x"]))
    if credential is not None:
        name = draw(st.sampled_from([b"x-api-key", b"authorization"]))
        headers.append((name, credential))
    if draw(st.booleans()):
        headers.append((b"anthropic-version", b"2023-06-01"))
    if draw(one_in(6)):
        headers.append((b"anthropic-beta", draw(st.sampled_from([b"interleaved-thinking-2025-05-14", b",,", b"\xff"]))))
    return {"method": method, "path": path, "content": content, "headers": headers}


def log_problems(balancer, since: int) -> list[str]:
    """Tracebacks (with the lines that follow them) and mitmproxy's "Addon error" lines logged after `since`."""
    lines = balancer.log_lines[since:]
    problems = [line for line in lines if "Addon error" in line]
    for i, line in enumerate(lines):
        if "Traceback" in line:
            problems.append("\n".join(lines[max(0, i - 1) : i + 40]))
    return problems


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise AssertionError(f"HTTP {response.status_code} body is not JSON: {response.content[:300]!r}") from None


def check_answer(request: dict[str, Any], response: httpx.Response) -> None:
    status, content_type = response.status_code, response.headers.get("content-type", "")
    where = f"{request['method']} {request['path']} -> HTTP {status}"
    assert "text/html" not in content_type, f"{where}: mitmproxy's own HTML page: {response.text[:300]}"
    if request["method"] == "HEAD":
        return
    if status >= 400:
        data = _json_body(response)
        assert isinstance(data, dict) and data.get("type") == "error", f"{where}: {data!r}"[:600]
        error = data.get("error")
        assert isinstance(error, dict) and isinstance(error.get("type"), str) and error["type"], f"{where}: {data!r}"
        assert isinstance(error.get("message"), str), f"{where}: {data!r}"[:600]
        return
    route = request["path"].split("?", 1)[0]
    if request["method"] != "POST" or status >= 300:
        return
    if route == "/v1/messages":
        if content_type.startswith("text/event-stream"):
            assert_stream_grammar(parse_sse(response.content), finished=True)
        else:
            data = _json_body(response)
            assert data.get("type") == "message" and isinstance(data.get("content"), list), f"{where}: {data!r}"
    elif route == "/v1/messages/count_tokens":
        tokens = _json_body(response).get("input_tokens")
        assert isinstance(tokens, int) and tokens >= 0, f"{where}: {response.text[:300]}"


def fuzz_the_balancer(balancer, provider_name: str, examples: int, fixed_seed: int) -> None:
    seen: collections.Counter[str] = collections.Counter()  # what the run covered (shown with pytest -s)

    # A fixed seed per caller (derandomize would give both callers the same examples: same inner function).
    @(seed(fixed_seed) if FUZZ_SCALE == 1 else _same)
    @fuzz_settings(examples)
    @given(request=client_requests())
    def one_request(request):
        since = len(balancer.log_lines)
        with httpx.Client(base_url=balancer.url, timeout=20) as client:
            try:
                response = client.request(request["method"], request["path"], content=request["content"],
                                          headers=request["headers"])
            except httpx.TransportError as exc:
                what = f"{request['method']} {request['path']}"
                raise AssertionError(f"the balancer did not answer {what}: {exc!r}") from exc
        seen[f"{request['method']} {request['path'].split('?')[0][:30]} -> {response.status_code}"] += 1
        check_answer(request, response)
        # A moment for the log reader, so that a problem is pinned on the example that caused it (shrinking needs
        # that); a line that comes later still fails the check after the last request below.
        time.sleep(0.01)
        problems = log_problems(balancer, since)
        assert not problems, "\n\n".join(problems)[:4000]

    since = len(balancer.log_lines)
    one_request()
    # ... and a normal request is still served by the provider.
    for stream in (False, True):
        before = len(balancer.log_lines)
        response = httpx.post(balancer.url + "/v1/messages", timeout=20, json={
            "model": "claude-sonnet-4-5", "max_tokens": 16, "stream": stream,
            "messages": [{"role": "user", "content": "Hi"}]})
        assert response.status_code == 200, response.text
        assert response.headers["x-balancer-provider"] == provider_name
        check_answer({"method": "POST", "path": "/v1/messages"}, response)
    # The last request's line is written when its flow is over: everything the fuzzing caused is logged by then.
    wait_until(lambda: any(f"-> {provider_name}/" in line and " stream 200 | attempts: " in line
                           for line in balancer.log_lines[before:]), what="the last request's log line")
    problems = log_problems(balancer, since)
    assert not problems, "\n\n".join(problems)[:4000]
    print(f"\nfuzzing via {provider_name}: {dict(seen.most_common())}")


@depths(75)
def test_fuzzed_requests_to_an_anthropic_provider(balancer, anthropic_fake, unique, examples):
    # A mapped model (the body is re-serialized) and round-robin (session affinity in force).
    name = f"fuzz-a-{unique}"
    balancer.use([anthropic_provider(name, anthropic_fake.url, big_model="mapped-big", small_model="mapped-small")],
                 strategy="round_robin", failure_cooldown=0, request_timeout=10)
    fuzz_the_balancer(balancer, name, examples, fixed_seed=1)


@depths(75)
def test_fuzzed_requests_to_an_openai_provider(balancer, openai_fake, unique, examples):
    # Count tokens locally (no Anthropic-type provider to ask).
    name = f"fuzz-o-{unique}"
    balancer.use([openai_provider(name, openai_fake.url)], failure_cooldown=0, request_timeout=10)
    fuzz_the_balancer(balancer, name, examples, fixed_seed=2)


def test_regression_lone_surrogate_through_the_balancer(balancer, openai_fake, unique):
    # Was: HTTP 500 "internal error in the balancer" and a traceback in the log.
    balancer.use([openai_provider(f"o-{unique}", openai_fake.url)], strategy="round_robin")
    since = len(balancer.log_lines)
    response = httpx.post(balancer.url + "/v1/messages", timeout=20, headers={"x-api-key": b"k\xff"},
                          content=json.dumps({**CUT_EMOJI, "metadata": {"user_id": "\ud800"}}).encode())
    assert response.status_code == 200, response.text
    wait_until(lambda: any(f"-> o-{unique}/" in line for line in balancer.log_lines[since:]), what="its log line")
    assert log_problems(balancer, since) == []
