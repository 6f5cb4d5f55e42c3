"""API requests (`/v1/...`) go to providers: the addon that follows each one through mitmproxy's hooks.

`request`: the flow gets its record (flow_record.py) and is dispatched (dispatch.py); the balancer's own answer
is set on the flow, or a provider's answer handed to the relay (relay_handoff.py); the attempts that are over get
flows of their own (attempt_flows.py). `responseheaders`: the flow receives the relayed answer. `response` /
`error`: the flow is over; the attempt that served it gets its flow, and its summary goes to the flow's
metadata, the log and whoever listens (`on_finished`: the metrics). Attempt flows pass through these hooks too,
and are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, http

from .access import client_of
from .affinity import SessionAffinity
from .attempt_flows import AttemptFlows, mode_in_force, with_flow_ids
from .attempt_marker import is_attempt_flow
from .dispatch import MESSAGE_ROUTES, Dispatcher, Reply, route_of
from .failover import CLIENT_GONE
from .flow_record import FlowRecord, RequestSummary
from .providers import Providers
from .relay import RELAYED, RelayServer
from .relay_handoff import hand_off, receive_answer, show_client_request
from .request_log import REQUEST_FIELD, summary_line
from .responses import error_response
from .routing import Router
from .stream_guard import stop_draining
from .token_count import warm_up
from .upstream import ClientPool

log = logging.getLogger("balancer")


class Gateway:
    def __init__(self, providers: Providers):
        self.providers = providers
        self.relay = RelayServer()
        self.pool = ClientPool()
        self.router = Router(keys=providers.keys)
        self.affinity = SessionAffinity()
        self.dispatcher = Dispatcher(providers, self.pool, self.router, self.affinity)
        self.attempt_flows = AttemptFlows(lambda: providers.redact)
        # Called with each finished API request's summary, whatever the order of the addons.
        self.on_finished: list[Callable[[RequestSummary], None]] = []
        # The API flows under way, by flow id (flow.metadata only holds plain data).
        self._records: dict[str, FlowRecord] = {}

    def runtime_status(self) -> dict[str, Any]:
        return {"open_streams": self.relay.open_count, "sessions": len(self.affinity)}

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def running(self) -> None:
        await self.relay.start()
        # The token vocabulary, in the background: start-up must not wait for it (nor fail on it).
        self._warm_up = asyncio.create_task(asyncio.to_thread(warm_up))

    async def done(self) -> None:
        await self.relay.stop()
        await stop_draining()
        await self.pool.aclose()

    # -- hooks -----------------------------------------------------------------------------------------------
    async def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live:
            return
        kind, wrong_method = route_of(flow.request.method, flow.request.path)
        if wrong_method:
            messages_route = flow.request.path.split("?", 1)[0] in MESSAGE_ROUTES
            allow = "POST" if messages_route else "GET, POST, DELETE"
            flow.response = error_response(405, "invalid_request_error", wrong_method, allow=allow)
            return
        if kind is None:
            return  # not an API path: another addon's, or the fallback's 404
        record = self._records[flow.id] = FlowRecord(
            request_id=flow.id[:8], kind=kind, path=flow.request.path.split("?", 1)[0], client=client_of(flow)
        )
        if self.providers.startup_error:
            self._answer(flow, record, Reply(error_response(
                503, "api_error", f"the balancer has no usable configuration: {self.providers.startup_error}"
            )))
            return
        try:
            record.attempt_flows = mode_in_force(self.providers.settings.attempt_flows)
            await self.pool.follow_tls_options(ctx.options)
            outcome = await self.dispatcher.dispatch(flow, record)
            if isinstance(outcome, Reply):
                self._answer(flow, record, outcome)
            else:
                await hand_off(self.relay, flow, record, outcome)
            await self.attempt_flows.attempts_over(flow, record, serving=record.served)
        except Exception:
            # A bug must never let the request fall through to mitmproxy's reverse target with the client's key.
            log.exception("req %s: internal error", record.request_id)
            if flow.live and not flow.response and not flow.metadata.get(RELAYED):
                self._answer(flow, record, Reply(error_response(500, "api_error", "internal error in the balancer")))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow):
            return
        record = self._records.get(flow.id)
        if record is not None:
            receive_answer(flow, record)

    async def response(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow):
            return
        record = self._records.pop(flow.id, None)
        if record is not None:
            await self._finish(flow, record, record.finished(flow.response.status_code if flow.response else None))

    async def error(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow):
            return
        record = self._records.pop(flow.id, None)
        if record is None:
            return
        if record.handoff is not None:
            await self.relay.discard(record.handoff.token)
            show_client_request(flow, record)  # not the hop to the relay
        left = flow.error is not None and "client disconnected" in str(flow.error).lower()
        await self._finish(flow, record, record.finished(None, ended=CLIENT_GONE if left else "error"))

    # -- helpers ---------------------------------------------------------------------------------------------
    def _answer(self, flow: http.HTTPFlow, record: FlowRecord, reply: Reply) -> None:
        """The balancer answers by itself (an error, a local count)."""
        record.answered_at = time.perf_counter()
        flow.response = reply.response
        if reply.comment is not None:
            flow.comment = reply.comment

    async def _finish(self, flow: http.HTTPFlow, record: FlowRecord, summary: RequestSummary) -> None:
        """The flow is over: the attempts still without a flow get theirs, its metadata gets the final figures
        (and its attempts' flow ids), the log its one line, the listeners the summary."""
        try:
            await self.attempt_flows.request_over(flow, record, summary)
        except Exception:  # flows to look at must never keep a request from being logged and counted
            log.exception("req %s: the attempts' flows failed", summary.request_id)
        metadata = summary.as_metadata()
        flow.metadata["balancer"] = with_flow_ids(metadata, record)
        log.info(summary_line(metadata), extra={REQUEST_FIELD: metadata})
        for listener in self.on_finished:
            try:
                listener(summary)
            except Exception:  # a listener's problem (the metrics) must never break a flow
                log.exception("req %s: a listener failed on the finished request", summary.request_id)
