"""The mark of a provider attempt's own flow (attempt_flows.py), and the one test for it.

Such a flow goes through mitmproxy's hooks so that mitmweb, mitmproxy and `-w` get it; every hook of the
balancer that could act on a flow returns at once for it (no recursion, nothing logged or counted twice).
The mark is a `flow.metadata` key, so `~meta balancer.attempt` shows these flows and `!~meta balancer.attempt`
hides them.
"""

from __future__ import annotations

from mitmproxy import flow

ATTEMPT = "balancer.attempt"


def is_attempt_flow(f: flow.Flow) -> bool:
    return ATTEMPT in f.metadata
