"""Fake providers that refuse what they do not know, worded exactly as real servers word it: an OpenAI-compatible
server refusing parameters (LiteLLM's `UnsupportedParamsError`, vLLM's pydantic `extra_forbidden`, OpenAI's
`Unsupported parameter`), and a strict Anthropic relay refusing beta values, body fields, `system` messages and
thinking signatures it did not make (Anthropic's own wordings)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fakes import Behavior, Message, Received
from helpers import openai_sse

LITELLM_WORDING = (
    "litellm.UnsupportedParamsError: openai does not support parameters: {names}, for model={model}. To drop these, "
    "set `litellm.drop_params=True` or for proxy:\n\n`litellm_settings:\n drop_params: true`\n. \n If you want to use "
    "these params dynamically send allowed_openai_params={names} in your request.. Received Model Group={model}\n"
    "Available Model Group Fallbacks=None"
)


def litellm_refusal(names: list[str], model: str) -> dict[str, Any]:
    listed = "[" + ", ".join(repr(n) for n in names) + "]"
    return {"error": {"message": LITELLM_WORDING.format(names=listed, model=model), "type": "None", "param": None,
                      "code": "400"}}


def vllm_refusal(names: list[str], model: str) -> dict[str, Any]:
    errors = [{"type": "extra_forbidden", "loc": ("body", n), "msg": "Extra inputs are not permitted", "input": None}
              for n in names]
    return {"object": "error", "message": repr(errors), "type": "BadRequestError", "param": None, "code": 400}


def openai_refusal(names: list[str], model: str) -> dict[str, Any]:
    name = names[0]
    message = f"Unsupported parameter: '{name}' is not supported with this model."
    if name == "max_tokens":
        message += " Use 'max_completion_tokens' instead."
    return {"error": {"message": message, "type": "invalid_request_error", "param": name,
                      "code": "unsupported_parameter"}}


REFUSALS: dict[str, Callable[[list[str], str], dict[str, Any]]] = {
    "litellm": litellm_refusal, "vllm": vllm_refusal, "openai": openai_refusal,
}


def openai_completion(model: str, text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}


def openai_stream(model: str, text: str) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model}
    return openai_sse(
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
        "[DONE]",
    )


@dataclass
class OpenAIAnswer(Behavior):
    """A Chat Completions answer: streamed when the request asks for it."""

    text: str = "Hello"

    def run(self, handler, request, fake):
        body = request.json()
        model = body.get("model", "unknown")
        if body.get("stream"):
            handler.start_stream(200)
            handler.write_chunk(openai_stream(model, self.text))
            handler.end_stream()
        else:
            handler.reply(200, openai_completion(model, self.text))


@dataclass
class RefusesParameters(Behavior):
    """An OpenAI-compatible server that answers 400 to a request carrying any of `names`, naming those it carries
    (`server`: litellm, vllm or openai, which names the first only); otherwise it answers as `otherwise` does."""

    names: tuple[str, ...]
    server: str = "litellm"
    otherwise: Behavior = field(default_factory=OpenAIAnswer)

    def run(self, handler, request, fake):
        body = request.json()
        present = [n for n in self.names if n in body]
        if present:
            handler.reply(400, REFUSALS[self.server](present, body.get("model", "unknown")))
        else:
            self.otherwise.run(handler, request, fake)


def anthropic_refusal(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


OWN_SIGNATURE = "relay-signed."


@dataclass
class StrictRelay(Behavior):
    """An Anthropic-compatible relay that validates strictly, in the order a server does: the `anthropic-beta`
    values it knows (`betas_refused` are refused), then the body's top-level fields (`fields_refused`; all at once
    as FastAPI does with `fastapi`), then `output_config.effort` (with `efforts`), then message roles (with
    `refuses_system`, a `system` message), then thinking signatures (with `checks_signatures`, one it did not make).
    The first problem is answered with Anthropic's wording; a request without one, as `otherwise`."""

    betas_refused: frozenset[str] = frozenset()
    fields_refused: frozenset[str] = frozenset()
    refuses_system: bool = False
    checks_signatures: bool = False
    # Non-empty: `output_config.effort` validated as Anthropic does (a genuine client error for any other value).
    efforts: tuple[str, ...] = ()
    # Body fields refused at once, as a FastAPI relay does (422, pydantic's `detail` list), not one by one.
    fastapi: bool = False
    otherwise: Behavior = field(default_factory=Message)

    def problem(self, request: Received) -> str | None:
        betas = [v.strip() for v in request.headers.get("anthropic-beta", "").split(",") if v.strip()]
        refused = [b for b in betas if b in self.betas_refused]
        if refused:
            return (f"Unexpected value(s) {', '.join(f'`{b}`' for b in refused)} for the `anthropic-beta` header. "
                    "Please consult our documentation at docs.anthropic.com or try again without the header.")
        body = request.json()
        for name in body:
            if name in self.fields_refused:
                return f"{name}: Extra inputs are not permitted"
        effort = (body.get("output_config") or {}).get("effort")
        if self.efforts and effort is not None and effort not in self.efforts:
            listed = ", ".join(f"'{e}'" for e in self.efforts[:-1]) + f" or '{self.efforts[-1]}'"
            return f"output_config.effort: Input should be {listed}"
        for position, message in enumerate(body.get("messages") or []):
            if self.refuses_system and message.get("role") == "system":
                return ('Unexpected role "system". The Messages API accepts a top-level `system` parameter, not '
                        '"system" as an input message role.')
            content = message.get("content")
            for index, block in enumerate(content if isinstance(content, list) else []):
                foreign = (block.get("type") == "thinking" and not str(block.get("signature")).startswith(
                    OWN_SIGNATURE)) or block.get("type") == "redacted_thinking"
                if self.checks_signatures and foreign:
                    return f"messages.{position}.content.{index}: Invalid `signature` in `thinking` block"
        return None

    def run(self, handler, request, fake):
        extra = [name for name in request.json() if name in self.fields_refused] if self.fastapi else []
        if extra:
            handler.reply(422, {"detail": [{"type": "extra_forbidden", "loc": ["body", name],
                                            "msg": "Extra inputs are not permitted", "input": request.json()[name]}
                                           for name in extra]})
            return
        problem = self.problem(request)
        if problem is not None:
            handler.reply(400, anthropic_refusal(problem), {"request-id": "req_strict"})
        else:
            self.otherwise.run(handler, request, fake)
