from __future__ import annotations

import itertools
from collections.abc import Iterator

import anthropic
import pytest

from addon.health import HealthBoard
from balancer_proc import BalancerProcess
from clock import ManualClock
from fakes import FakeProvider

_names = itertools.count(1)


@pytest.fixture(scope="session")
def balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BalancerProcess]:
    """One mitmdump + addon for the session; each test installs its own providers with `balancer.use(...)`."""
    workdir = tmp_path_factory.mktemp("balancer")
    process = BalancerProcess(workdir)
    process.write_providers([{"name": "placeholder", "base_url": "http://127.0.0.1:9", "auth_value": "x"}])
    with process:
        yield process


@pytest.fixture
def unique() -> str:
    """A fresh suffix for provider names, so that health state never leaks from one test to the next."""
    return f"t{next(_names)}"


@pytest.fixture
def fakes() -> Iterator[list[FakeProvider]]:
    """Three started fake Anthropic providers, stopped after the test."""
    started = [FakeProvider().start() for _ in range(3)]
    yield started
    for fake in started:
        fake.stop()


@pytest.fixture
def client(balancer: BalancerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=balancer.url, api_key="client-own-key", max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
def clock() -> ManualClock:
    """The monotonic clock of a health board, moved by hand."""
    return ManualClock()


@pytest.fixture
def board(clock: ManualClock) -> HealthBoard:
    return HealthBoard(clock=clock, wall=ManualClock(now=1_700_000_000.0))
