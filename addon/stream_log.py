"""mitmproxy's own line for every streamed response, dropped.

mitmproxy logs `<client>: Streaming response from <host>.` whenever an addon streams a response, and the balancer
streams every relayed answer: one line per stream that says nothing the request's summary line does not. Each
also costs a pass over every addon (mitmproxy turns each log record into an `add_log` event) and a terminal write:
about a tenth of the CPU a short stream costs the balancer. Every other line of mitmproxy's stays.
"""

from __future__ import annotations

import logging

# The logger of mitmproxy's connection handlers, which write what the proxy layers log.
_PROXY_LOGGER = "mitmproxy.proxy.server"
_STREAMING = "Streaming response from "


class StreamLineFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_STREAMING))


class QuietStreamLines:
    def __init__(self) -> None:
        self._filter = StreamLineFilter()

    def load(self, loader: object) -> None:
        logging.getLogger(_PROXY_LOGGER).addFilter(self._filter)

    def done(self) -> None:
        logging.getLogger(_PROXY_LOGGER).removeFilter(self._filter)
