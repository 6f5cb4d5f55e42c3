"""`POST /v1/messages/count_tokens` answered by the balancer itself, offline (token_count.py): when the settings
say so (`count_tokens: local`), or with `auto` when no provider can be asked or none could count."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mitmproxy import http

from .config import Settings
from .failover import Exhausted, Success
from .responses import PROVIDER_HEADER
from .routing import Plan
from .token_count import count_input_tokens

# Who served a local count, in the answer's x-balancer-provider header, the flow, the log and the metrics.
LOCAL_PROVIDER = "local"


def counts_before_asking(settings: Settings, plan: Plan) -> bool:
    """Counted here without asking any provider."""
    return settings.count_tokens == "local" or (settings.count_tokens == "auto" and not plan.usable)


def counts_after_asking(settings: Settings, result: Success | Exhausted) -> bool:
    """Counted here after all: `auto`, and no provider answered the count (or none without an error)."""
    return settings.count_tokens == "auto" and (isinstance(result, Exhausted) or result.response.status_code >= 400)


async def local_count(parsed: dict[str, Any] | None) -> http.Response:
    # In a thread: a large request takes milliseconds to encode, and streams must not wait for it.
    tokens = await asyncio.to_thread(count_input_tokens, parsed or {})
    return http.Response.make(
        200, json.dumps({"input_tokens": tokens}).encode(),
        {"content-type": "application/json", PROVIDER_HEADER: LOCAL_PROVIDER},
    )
