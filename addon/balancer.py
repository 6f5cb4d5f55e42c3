"""The script mitmproxy loads: `mitmdump -s addon/balancer.py --mode reverse:https://api.anthropic.com`.

It only wires the addon's parts together; each lives in its own module under `addon/`.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
# mitmproxy re-runs this script when it changes: drop our cached modules so that edits to them load too.
for _name in [m for m in sys.modules if m == "addon" or m.startswith("addon.")]:
    del sys.modules[_name]

from addon.access import AccessControl  # noqa: E402
from addon.admin import AdminApi  # noqa: E402
from addon.body_limits import BodyLimits, DeferredAnswers  # noqa: E402
from addon.client_usage import ClientUsage  # noqa: E402
from addon.commands import BalancerCommands  # noqa: E402
from addon.fallback import NotFound  # noqa: E402
from addon.flow_hygiene import FlowHygiene  # noqa: E402
from addon.gateway import Gateway  # noqa: E402
from addon.head import HeadRequests  # noqa: E402
from addon.listen_backlog import ListenBacklog  # noqa: E402
from addon.metrics import Metrics  # noqa: E402
from addon.models_api import ModelsApi  # noqa: E402
from addon.open_files import OpenFileLimit  # noqa: E402
from addon.own_answers import OwnAnswers  # noqa: E402
from addon.providers import Providers  # noqa: E402
from addon.relay_headroom import RelayHeadroom  # noqa: E402
from addon.request_target import RequestTarget  # noqa: E402
from addon.route_explain import RouteExplain  # noqa: E402
from addon.shared_state import SharedState  # noqa: E402
from addon.stream_log import QuietStreamLines  # noqa: E402
from addon.usage_api import UsageApi  # noqa: E402

providers = Providers()
# What keys and clients used in the current minute, day and month: one count for the client quotas and the key
# limits, which the shared state keeps in step with the other instances'.
usage = providers.keys.usage
gateway = Gateway(providers)
metrics = Metrics(providers)
gateway.on_finished.append(metrics.count)
client_usage = ClientUsage(providers, usage, metrics.registry)
gateway.on_finished.append(client_usage.count)
gateway.on_finished.append(providers.keys.request_over)
explain = RouteExplain(providers, gateway.dispatcher.planner, gateway.affinity)
addons = [
    OpenFileLimit(),  # first: the limit is raised before anything opens connections
    ListenBacklog(),
    QuietStreamLines(),  # no line of mitmproxy's for each relayed stream
    providers,
    # Several instances, one view of the providers (only with settings.shared_state): keeps the health board,
    # the session map and the round-robin turn in step with the other instances', never on a request's path.
    SharedState(providers, gateway.affinity, gateway.router),
    FlowHygiene(providers),  # first to see a flow: no credential in what mitmweb shows or -w saves
    RequestTarget(),  # before any other request hook: every later part routes on the canonical path
    BodyLimits(providers, gateway.relay),  # the body decoded, within max_body_size, before anything reads it
    AccessControl(providers),  # before anything that answers or forwards a request
    client_usage,  # right after: a client over a quota is refused before any provider is tried
    AdminApi(providers, gateway.runtime_status),
    explain,  # POST /routes/explain
    UsageApi(providers, client_usage.book),
    ModelsApi(providers),
    gateway,
    RelayHeadroom(gateway.relay),  # right after the gateway: an answer it parked needs descriptors for the hop
    metrics,
    BalancerCommands(providers, gateway.runtime_status, explain.explain_flow),
    NotFound(),  # last: whatever nothing above answered
    DeferredAnswers(gateway.relay),  # after every answer: flows already on their way to the relay get it there
    OwnAnswers(),  # the balancer's own answers show its address in mitmweb, not the reverse target's
    HeadRequests(),  # HEAD answers lose their bodies, whoever made them
]
