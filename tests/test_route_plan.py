"""Planning a request on its route (route_plan.py) and leaving out the providers that cannot serve it
(provider_fit.py), pure: a real Router and HealthBoard, no process."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from addon.config import BalancerConfig, ProviderConfig
from addon.health import HealthBoard
from addon.model_map import choose_model
from addon.provider_fit import fit_plan, unfit_for
from addon.request_traits import RequestTraits, traits_of
from addon.route_plan import RoutePlanner, affinity_on, route_table
from addon.routing import Plan, Router

IMAGE_BLOCK = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}


def provider(name: str, kind: str = "anthropic", **extra: Any) -> ProviderConfig:
    return ProviderConfig(name=name, type=kind, base_url="http://127.0.0.1:9", auth_value="k", **extra)


def request(model: str = "claude-sonnet-4", **extra: Any) -> RequestTraits:
    fields: dict[str, Any] = {"model": model, "tier": "small" if "haiku" in model else "big", "thinking": False,
                              "server_tools": (), "images": False, "subagent": False, "headers": {}, "client": None}
    return RequestTraits(**(fields | extra))


def config(routes: list[dict[str, Any]], *providers: ProviderConfig, **settings: Any) -> BalancerConfig:
    return BalancerConfig.model_validate({"providers": [p.model_dump() for p in providers], "routes": routes,
                                          "settings": settings})


def names(providers: list[ProviderConfig]) -> list[str]:
    return [p.name for p in providers]


def plan_for(cfg: BalancerConfig, traits: RequestTraits, board: HealthBoard | None = None,
             router: Router | None = None, dry_run: bool = False):
    planner = RoutePlanner(router or Router(seed=1))
    return planner.plan(cfg, board or HealthBoard(), cfg.settings, traits, lambda route: None, dry_run=dry_run)


# -- capabilities --------------------------------------------------------------------------------------------------

def test_a_provider_without_images_is_skipped_with_its_reason_and_none_that_can_is_a_refusal():
    blind, seeing = provider("blind", images=False), provider("seeing")
    fitted = fit_plan(Plan([blind, seeing], []), request(images=True), [blind, seeing])
    assert names(fitted.plan.usable) == ["seeing"]
    assert [(p.name, why) for p, why in fitted.plan.skipped] == [
        ("blind", "has images: false and the request carries images")]
    assert fitted.refusal is None
    alone = fit_plan(Plan([blind], []), request(images=True), [blind])
    assert alone.plan.usable == [] and alone.refusal is not None and "images: false" in alone.refusal


def test_a_server_tools_reason_names_a_few_of_the_clients_types_each_cut_short():
    """The reason goes into the log, the flow and the JSON log: a client's thousand tool types are not copied."""
    many = tuple(f"web_search_{i:04d}" + "x" * 1000 for i in range(1000))
    unfit = unfit_for(provider("o", "openai"), request(server_tools=many))
    assert unfit is not None and not unfit.hard
    assert unfit.reason.startswith("cannot run server tools (web_search_0000xxx")
    assert unfit.reason.endswith(" and 997 more): not an Anthropic-type provider")
    assert len(unfit.reason) < 300
    one = unfit_for(provider("o", "openai"), request(server_tools=("web_search_20250305",)))
    assert one is not None
    assert one.reason == "cannot run server tools (web_search_20250305): not an Anthropic-type provider"


def test_a_context_above_max_context_goes_last_and_only_when_counted():
    short, long_ = provider("short", max_context=1000), provider("long")
    fitted = fit_plan(Plan([short, long_], []), request(input_tokens=5000), [short, long_])
    assert names(fitted.plan.usable) == ["long", "short"]
    assert fitted.last_resort == {"short": "the request's estimated 5000 input tokens exceed its max_context 1000"}
    assert fit_plan(Plan([short, long_], []), request(input_tokens=900), [short, long_]).last_resort == {}


# -- routes --------------------------------------------------------------------------------------------------------

def test_a_routes_providers_in_its_order_with_its_model_and_the_shared_config_untouched():
    a, b, c = provider("a", big_model="a-big"), provider("b", big_model="b-big"), provider("c")
    cfg = config([{"name": "r", "when": {"model_tier": "big"}, "providers": ["b", {"name": "a", "model": "a-route"}]}],
                 a, b, c)
    routed = plan_for(cfg, request())
    assert (routed.route, names(routed.plan.usable)) == ("r", ["b", "a"])
    assert choose_model("claude-sonnet-4", routed.plan.usable[1]).model == "a-route"
    assert choose_model("claude-haiku-4", routed.plan.usable[1]).model == "a-route"  # whatever the tier
    assert cfg.providers[0].big_model == "a-big"  # the configured provider is not changed
    passthrough = config([{"name": "r", "providers": [{"name": "a", "model": "passthrough"}]}], a)
    assert choose_model("claude-sonnet-4", plan_for(passthrough, request()).plan.usable[0]).model == "claude-sonnet-4"
    small = plan_for(cfg, request("claude-haiku-4-5"))
    assert (small.route, names(small.plan.usable)) == ("default", ["a", "b", "c"])


def test_the_strategy_orders_a_routes_providers_and_a_dry_run_moves_no_turn():
    cfg = config([{"name": "r", "providers": ["a", "b", "c"]}], provider("a"), provider("b"), provider("c"),
                 strategy="round_robin")
    router = Router(seed=1)
    first = [names(plan_for(cfg, request(), router=router, dry_run=True).plan.usable) for _ in range(3)]
    assert first == [["a", "b", "c"]] * 3 and router.turn == 0
    real = [names(plan_for(cfg, request(), router=router).plan.usable) for _ in range(2)]
    assert real == [["a", "b", "c"], ["b", "c", "a"]] and router.turn == 2


def test_fallback_takes_the_default_route_only_when_set_and_no_provider_of_the_route_serves_now():
    board = HealthBoard()
    a, b = provider("a"), provider("b")
    board.cool_down("a", 60, "HTTP 529", "overloaded")
    off = config([{"name": "r", "providers": ["a"]}], a, b)
    routed = plan_for(off, request(), board)
    assert (routed.route, routed.fell_back, names(routed.plan.later)) == ("r", None, ["a"])
    on = config([{"name": "r", "providers": ["a"], "fallback": True}], a, b)
    routed = plan_for(on, request(), board)
    assert routed.route == "default" and names(routed.plan.usable) == ["b"]
    assert routed.fell_back == "no provider of route 'r' can serve it now (a: cooling down)"


def test_a_routes_disabled_providers_are_named_among_its_skips():
    cfg = config([{"name": "r", "providers": ["a", "b"]}], provider("a", enabled=False), provider("b"))
    routed = plan_for(cfg, request())
    assert [(p.name, why) for p, why in routed.plan.skipped] == [("a", "disabled")]
    assert routed.not_tried({"b"}) == [("a", "disabled")]


def test_tokens_are_counted_only_above_the_smallest_threshold():
    cfg = config([{"name": "r", "when": {"min_input_tokens": 5000}, "providers": ["a"]}],
                 provider("a"), provider("b", max_context=3000))
    table = route_table(cfg)
    assert table.count_from == 3000
    small, needed = table.bounded(request(), b"x" * 1000)
    assert small.input_bound == 1000 and not needed
    assert table.bounded(request(), b"x" * 3000)[1]
    # A body at least as long as the threshold is counted without reading its bound (a scan of all its bytes).
    assert table.bounded(request(), b"x" * 10**6) == (request(), True)
    assert route_table(config([], provider("a"))).bounded(request(), b"x" * 10**6) == (request(), False)


def test_affinity_is_kept_per_route():
    assert affinity_on("session:1", "default") == "session:1"
    assert affinity_on("session:1", "big") != affinity_on("session:1", "small")
    assert affinity_on(None, "big") is None


def test_a_routes_hedge_after_goes_with_its_plan_but_not_after_a_fallback():
    cfg = config([{"name": "r", "providers": ["a"], "hedge_after": 3}], provider("a"))
    assert plan_for(cfg, request()).hedge_after == 3.0
    board = HealthBoard()
    board.cool_down("a", 60, "HTTP 529", "overloaded")
    cfg = config([{"name": "r", "providers": ["a"], "hedge_after": 3, "fallback": True}], provider("a"), provider("b"))
    assert plan_for(cfg, request(), board).hedge_after is None


# -- images: looked for only when something asks -----------------------------------------------------------------

def test_the_table_looks_at_images_only_when_a_route_or_a_provider_asks():
    assert route_table(config([], provider("a"), provider("b"))).looks_at_images is False
    assert route_table(config([], provider("a"), provider("b", images=False))).looks_at_images is True
    asks = [{"name": "pics", "when": {"images": True}, "providers": ["a"]}]
    assert route_table(config(asks, provider("a"))).looks_at_images is True
    other = [{"name": "big", "when": {"model_tier": "big"}, "providers": ["a"]}]
    assert route_table(config(other, provider("a"))).looks_at_images is False


def test_traits_without_the_image_walk_say_not_looked_and_the_rest_is_the_same():
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": [IMAGE_BLOCK]}]}
    looked, skipped = traits_of(body, [], None), traits_of(body, [], None, images=False)
    assert looked.images is True and skipped.images is None
    assert replace(looked, images=None) == skipped
    # Not looked at is never taken for images: no provider is left out for them.
    assert unfit_for(provider("blind", images=False), skipped) is None
