"""What the benchmark measures, behind one interface: each target says where a request for a fake provider's
profile (ok, paced, slow) of a provider type (Anthropic or OpenAI) goes, and which processes pay for it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from . import procstat
from .processes import Balancer, FakeProvider, Process, provider, start_together

ANTHROPIC, OPENAI = "anthropic", "openai"  # the type of the provider behind a row
PATHS = {ANTHROPIC: "/v1/messages", OPENAI: "/v1/chat/completions"}
MODEL = "claude-sonnet-4"


@dataclass(frozen=True)
class Route:
    url: str
    path: str
    model: str
    pids: Callable[[], list[int]]  # the processes whose CPU time and descriptors are the target's cost


class Target:
    name = "target"

    def route(self, profile: str, kind: str) -> Route:
        raise NotImplementedError


class Direct(Target):
    """The fake provider itself, or a proxy that forwards paths as they are (bare mitmdump) in front of it."""

    def __init__(self, name: str, process: Process):
        self.name, self.process = name, process

    def route(self, profile: str, kind: str) -> Route:
        return Route(self.process.url, f"/{profile}{PATHS[kind]}", MODEL, lambda: [self.process.pid])


class Fixed(Target):
    """One balancer process, whatever the profile (its providers decide)."""

    def __init__(self, name: str, process: Process):
        self.name, self.process = name, process

    def route(self, profile: str, kind: str) -> Route:
        return Route(self.process.url, PATHS[ANTHROPIC], MODEL, lambda: [self.process.pid])


class Balancers(Target):
    """The balancer: one mitmdump per profile and provider type, started on first use."""

    name = "balancer"

    def __init__(self, stack: ExitStack, fake: FakeProvider):
        self.stack, self.fake = stack, fake
        self.running: dict[tuple[str, str], Balancer] = {}

    def _new(self, profile: str, kind: str) -> Balancer:
        url = self.fake.anthropic(profile) if kind == ANTHROPIC else self.fake.openai(profile)
        return Balancer([provider("fake", url, kind)])

    def start(self, keys: list[tuple[str, str]]) -> None:
        """Start the balancers for these (profile, kind) side by side."""
        todo = [key for key in keys if key not in self.running]
        started = start_together([lambda p=p, k=k: self._new(p, k) for p, k in todo])
        for key, process in zip(todo, started, strict=True):
            self.running[key] = self.stack.enter_context(process)

    def process(self, profile: str, kind: str) -> Balancer:
        if (profile, kind) not in self.running:
            self.start([(profile, kind)])
        return self.running[profile, kind]

    def route(self, profile: str, kind: str) -> Route:
        process = self.process(profile, kind)
        return Route(process.url, PATHS[ANTHROPIC], MODEL, lambda: [process.pid])


def route_name(profile: str, kind: str) -> str:
    return f"{kind}-{profile}"


def peer_routes(fake: FakeProvider, profiles: tuple[str, ...] = ("ok", "paced", "slow")) -> dict[str, tuple[str, str]]:
    """A peer's routes, one per profile and provider type, named by route_name()."""
    return {route_name(p, kind): (kind, fake.anthropic(p) if kind == ANTHROPIC else fake.openai(p))
            for kind in (ANTHROPIC, OPENAI) for p in profiles}


class Peer(Target):
    """A peer proxy serving every route in one process tree; the route is picked by the request's model."""

    def __init__(self, name: str, url: str, root_pid: int, model_for: Callable[[str], str]):
        self.name, self.url, self.root_pid, self.model_for = name, url, root_pid, model_for

    def route(self, profile: str, kind: str) -> Route:
        return Route(self.url, PATHS[ANTHROPIC], self.model_for(route_name(profile, kind)),
                     lambda: procstat.tree(self.root_pid))
