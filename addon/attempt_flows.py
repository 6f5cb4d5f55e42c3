"""Every provider attempt as a flow of its own, beside the client's flow: in mitmweb, in mitmproxy's console and
in `-w` saved flows.

An attempt's flow holds the request exactly as the provider received it (credential headers `[redacted]`) and the
provider's answer as it came (status, headers, body up to `settings.attempt_body_limit`), or, when no answer
came, an error that says why. It is finished (`live=False`) when it goes through mitmproxy's hooks, so that
mitmweb's view, the console and the save addon take it like a flow read from a file, and it is marked
(attempt_marker.py) so that the balancer's own hooks leave it alone.

Which attempts get a flow: `settings.attempt_flows` (all | failed | none); by default all of them where
mitmproxy keeps or saves flows (mitmweb, mitmproxy, `-w`), and the failed ones under a bare mitmdump.
The attempts that failed go out as soon as the request has its answer; the one that served the client when the
client's flow ends (its body is read while it is relayed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, ctx, eventsequence, flow, http

from .attempt_marker import ATTEMPT
from .body_decoding import TooLarge, Undecodable, UnknownEncoding, decode_body
from .failover import CLIENT_GONE
from .flow_hygiene import shown_fields
from .flow_record import AttemptSummary, FlowRecord, RequestSummary
from .provider_wire import ProviderWire

log = logging.getLogger("balancer")

ALL, FAILED, NONE = "all", "failed", "none"
# A compressed answer is decoded (to look for credentials) up to this many times the kept bytes.
_DECODED_FACTOR = 8
# A body larger than this is looked through for credentials off the event loop (256 KiB take tens of ms).
_INLINE_BODY = 16 * 1024


def default_mode(keeps_flows: bool, saves_flows: bool) -> str:
    """All attempts where mitmproxy keeps flows to look at (mitmweb, mitmproxy) or saves them (`-w`); else
    (a bare mitmdump) only the failed ones, which it prints."""
    return ALL if keeps_flows or saves_flows else FAILED


def mode_in_force(setting: str | None) -> str:
    """`settings.attempt_flows`, or the default for the tool that runs the balancer."""
    if setting is not None:
        return setting
    keeps = ctx.master.addons.get("view") is not None  # mitmweb's and mitmproxy's flow list
    saves = "save_stream_file" in ctx.options and bool(ctx.options.save_stream_file)
    return default_mode(keeps, saves)


def wanted(mode: str, attempt: AttemptSummary) -> bool:
    """Under `failed`: the attempts that failed (also after their stream reached the client), and those cancelled
    because the client left (a provider that kept it waiting is worth a look)."""
    return mode == ALL or (mode == FAILED and (attempt.failed or attempt.outcome == CLIENT_GONE))


@dataclass(frozen=True)
class AttemptLink:
    """Where an attempt stands among its request's attempts."""

    client_flow: str  # the client flow's id
    request_id: str  # the id the log shows (`req 9ee6dd4e`)
    position: int  # 1-based
    of: int
    served: bool  # its answer went to the client
    ended: str | None = None  # the client's request ended early (the request summary's `ended`)


def comment(link: AttemptLink, attempt: AttemptSummary, wire: ProviderWire) -> str:
    """`attempt 1 of 2 for req 9ee6dd4e: HTTP 529 overloaded_error: Overloaded`, and what the body kept."""
    key = f" with key {attempt.key}" if attempt.key else ""
    text = f"attempt {link.position} of {link.of} for req {link.request_id}{key}: {attempt.outcome}"
    if link.served:
        text += f" (served the client, then the request ended: {link.ended})" if link.ended else " (served the client)"
    if wire.status is not None and wire.cut:
        text += f"; answer body cut at {len(wire.body)} of {wire.seen} bytes read"
    return text


def shown_body(raw: bytes, content_encoding: str, redact: Callable[[str], str], cap: int) -> tuple[bytes, bool]:
    """The answer body as the flow keeps it: as it came, unless it held a credential, which `redact` replaced
    (a compressed body is looked into). Returns (body, decoded): `decoded` when the body is no longer in
    `content_encoding` (it was decoded to be redacted)."""
    if content_encoding.strip() and content_encoding.strip().lower() != "identity":
        try:
            plain = decode_body(raw, content_encoding, cap)
        except (TooLarge, Undecodable, UnknownEncoding):
            return _redacted(raw, redact), False  # cut or odd: what is readable in it is redacted
        redacted = _redacted(plain, redact)
        return (raw, False) if redacted == plain else (redacted, True)
    return _redacted(raw, redact), False


def _redacted(body: bytes, redact: Callable[[str], str]) -> bytes:
    text = body.decode("utf-8", "surrogateescape")
    shown = redact(text)
    return body if shown == text else shown.encode("utf-8", "surrogateescape")


def attempt_flow(
    wire: ProviderWire, attempt: AttemptSummary, link: AttemptLink, redact: Callable[[str], str]
) -> http.HTTPFlow:
    """The attempt as a finished mitmproxy flow."""
    assert wire.request is not None
    now = time.time()
    sent = wire.request
    sent_at = wire.sent_at or now
    ended_at = wire.ended_at or now
    url = sent.url
    port = url.port or (443 if url.scheme == "https" else 80)
    headers, _ = shown_fields(sent.headers.raw, redact)
    request = http.Request(
        host=url.host, port=port, method=sent.method.encode(), scheme=url.scheme.encode(), authority=b"",
        path=url.raw_path, http_version=wire.http_version.encode(), headers=headers, content=sent.content,
        trailers=None, timestamp_start=sent_at, timestamp_end=sent_at,
    )
    client = connection.Client(
        peername=wire.local or ("127.0.0.1", 0), sockname=wire.local or ("127.0.0.1", 0), timestamp_start=sent_at
    )
    client.timestamp_end = ended_at
    server = connection.Server(address=(url.host, port), peername=wire.server, sockname=wire.local,
                               timestamp_start=sent_at)
    server.timestamp_end = ended_at
    server.tls = url.scheme == "https"
    f = http.HTTPFlow(client, server, live=False)
    f.timestamp_created = sent_at
    f.request = request
    if wire.status is not None:
        f.response = _response(wire, redact, ended_at)
    else:
        f.error = flow.Error(redact(wire.error or attempt.outcome), ended_at)
    f.comment = comment(link, attempt, wire)
    f.metadata[ATTEMPT] = {
        "client_flow": link.client_flow,
        "request_id": link.request_id,
        "attempt": link.position,
        "of": link.of,
        "provider": attempt.provider,
        "outcome": attempt.outcome,
        "failed": attempt.failed,
        "class": attempt.failure_class,
        "served": link.served,
        "ms": attempt.ms,
        "answer_bytes": {"kept": len(wire.body), "read": wire.seen, "cut": wire.cut},
    }
    if attempt.key is not None:
        f.metadata[ATTEMPT]["key"] = attempt.key  # `#2`: which key of the pool, never the key
    return f


def _response(wire: ProviderWire, redact: Callable[[str], str], ended_at: float) -> http.Response:
    assert wire.status is not None
    headers = http.Headers([(name, _redacted(value, redact)) for name, value in wire.headers])
    cap = max(wire.limit, 1) * _DECODED_FACTOR
    body, decoded = shown_body(bytes(wire.body), headers.get("content-encoding", ""), redact, cap)
    response = http.Response(
        http_version=wire.http_version.encode(), status_code=wire.status,
        reason=wire.reason.encode("latin-1", "replace"), headers=headers, content=None, trailers=None,
        timestamp_start=wire.answered_at or ended_at, timestamp_end=ended_at,
    )
    if decoded:
        response.content = body  # encoded again as the headers say: what mitmweb shows is the redacted text
    else:
        response.raw_content = body
    return response


class AttemptFlows:
    """Makes the attempts' flows of the gateway's requests and runs them through mitmproxy's hooks."""

    def __init__(self, redact: Callable[[], Callable[[str], str]]):
        self._redact = redact  # the providers' current redactor

    async def attempts_over(self, client: http.HTTPFlow, record: FlowRecord, serving: bool) -> None:
        """The request has its answer: the attempts that are over get their flows (all but the one that serves
        the client when `serving`)."""
        over = len(record.attempts) - 1 if serving else len(record.attempts)
        await self._emit(client, record, record.attempts[:over])

    async def request_over(self, client: http.HTTPFlow, record: FlowRecord, summary: RequestSummary) -> None:
        """The client's flow ends: the attempts still without a flow get theirs (as the summary has them)."""
        await self._emit(client, record, summary.attempts, summary.ended)

    async def _emit(self, client: http.HTTPFlow, record: FlowRecord, attempts: Sequence[AttemptSummary],
                    ended: str | None = None) -> None:
        made: list[http.HTTPFlow] = []
        redact = record.redact or self._redact()
        for position, attempt in enumerate(attempts, start=1):
            wire = record.wires[position - 1] if position <= len(record.wires) else None
            if wire is None or wire.request is None or position in record.attempt_flow_ids:
                continue
            if not wanted(record.attempt_flows, attempt):
                continue
            served = record.served and position == len(record.attempts)
            link = AttemptLink(client.id, record.request_id, position, len(record.attempts), served, ended)
            try:
                if len(wire.body) <= _INLINE_BODY:
                    made.append(attempt_flow(wire, attempt, link, redact))
                else:  # the streams of every other request go on meanwhile
                    made.append(await asyncio.to_thread(attempt_flow, wire, attempt, link, redact))
            except Exception:  # a flow to look at must never break the request
                log.exception("req %s: attempt %d's flow could not be made", record.request_id, position)
                continue
            record.attempt_flow_ids[position] = made[-1].id
        for attempt_flow_ in made:
            await show(attempt_flow_)


async def show(f: flow.Flow) -> None:
    """The flow through mitmproxy's hooks, as a flow read from a file goes (Master.load_flow, without its
    rewriting of the host to the reverse-proxy target): mitmweb and mitmproxy list it, `-w` saves it."""
    manager = ctx.master.addons
    for event in eventsequence.iterate(f):
        await manager.handle_lifecycle(event)


def with_flow_ids(metadata: dict[str, Any], record: FlowRecord) -> dict[str, Any]:
    """The client flow's metadata, each attempt naming its own flow's id (when it has one)."""
    if not record.attempt_flow_ids:
        return metadata
    attempts = [
        {**attempt, "flow": record.attempt_flow_ids[position]} if position in record.attempt_flow_ids else attempt
        for position, attempt in enumerate(metadata.get("attempts", []), start=1)
    ]
    return {**metadata, "attempts": attempts}
