"""Unit tests for blaming the right party: the cooldown rule (failover.py, health.py), what the client is told when
no provider served (exhaustion.py), and a client that leaves while a provider is asked (failover.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from addon.config import ProviderConfig, Settings
from addon.exhaustion import CLIENT_RETRY_LIMIT, answer_for, retry_after_for, status_for
from addon.failover import CLIENT_GONE, AttemptRecord, Exhausted, attempt_in_turn, cools_down, record_failure
from addon.health import AUTH, OVERLOADED, RATE_LIMITED, SERVER_ERROR, STREAM_ERROR, TIMEOUT, TRANSPORT, HealthBoard
from addon.routing import plan_attempts
from addon.upstream import ClientPool
from clock import ManualClock


def provider(name: str, url: str | None = None) -> ProviderConfig:
    return ProviderConfig(name=name, base_url=url or f"https://{name}.example.com", auth_value="k")


POLICY = Settings(failure_cooldown=10, cooldown_growth=2, max_cooldown=35)


# -- the cooldown rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [TRANSPORT, TIMEOUT, AUTH])
def test_an_unreachable_silent_or_refusing_provider_cools_down_at_once(kind: str) -> None:
    assert cools_down(kind, None, cooldowns=0, failure_rate=0.1, threshold=0.5)


@pytest.mark.parametrize("kind", [OVERLOADED, RATE_LIMITED, SERVER_ERROR, STREAM_ERROR])
def test_an_error_answer_cools_down_by_the_failure_rate(kind: str) -> None:
    assert not cools_down(kind, None, cooldowns=0, failure_rate=0.4, threshold=0.5)
    assert cools_down(kind, None, cooldowns=0, failure_rate=0.5, threshold=0.5)
    assert cools_down(kind, 0.0, cooldowns=0, failure_rate=0.1, threshold=0.5)  # it said when to come back
    assert cools_down(kind, None, cooldowns=1, failure_rate=0.1, threshold=0.5)  # a failed probe
    assert cools_down(kind, None, cooldowns=0, failure_rate=0.1, threshold=0.0)  # 0: the first failure


def test_one_error_among_successes_is_counted_but_cools_nothing(board: HealthBoard) -> None:
    for _ in range(3):
        board.record_success("a")
    record_failure(board, POLICY, "a", "HTTP 529", OVERLOADED)
    health = board.get("a")
    assert (health.failures, health.consecutive_failures, health.cooldowns) == (1, 1, 0)
    assert not board.is_cooling_down("a")
    assert board.record_attempt("a") is False  # not a probe either: other requests keep using it


def test_errors_that_are_half_of_the_latest_outcomes_cool_it_down(board: HealthBoard) -> None:
    for _ in range(3):
        board.record_success("a")
    record_failure(board, POLICY, "a", "HTTP 529", OVERLOADED)
    record_failure(board, POLICY, "a", "HTTP 529", OVERLOADED)
    assert not board.is_cooling_down("a")  # 2 of 5
    record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)
    assert board.cooldown_remaining("a") == 10  # 3 of 6: the first cooldown lasts failure_cooldown
    assert board.get("a").cooldown_reason == "HTTP 500"


def test_the_failure_rate_looks_at_the_latest_ten_outcomes_only(board: HealthBoard) -> None:
    for _ in range(5):
        record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)
        board.record_success("a")
    for _ in range(10):
        board.record_success("a")
    assert board.get("a").failure_rate == 0.0
    record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)
    assert board.get("a").failure_rate == pytest.approx(0.1)
    assert not board.is_cooling_down("a")


def test_a_failure_rate_of_zero_cools_at_the_first_error(board: HealthBoard) -> None:
    for _ in range(9):
        board.record_success("a")
    record_failure(board, Settings(failure_cooldown=10, failure_rate=0), "a", "HTTP 529", OVERLOADED)
    assert board.cooldown_remaining("a") == 10


def test_a_failure_while_recovering_cools_again_and_longer(board: HealthBoard, clock: ManualClock) -> None:
    record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)  # a new provider: 1 of 1
    clock.advance(10)
    assert board.record_attempt("a") is True  # the probe
    board.record_success("a")
    board.record_success("a")
    record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)  # 2 of 4 after a success: cooled, not grown
    assert board.cooldown_remaining("a") == 10
    clock.advance(10)
    board.record_attempt("a")
    for _ in range(6):
        board.record_success("a")
    record_failure(board, POLICY, "a", "connection refused", TRANSPORT)  # at once, whatever the rate
    assert board.cooldown_remaining("a") == 10
    clock.advance(10)
    record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)  # the probe fails: straight back, twice as long
    assert board.cooldown_remaining("a") == 20


def test_concurrent_failures_may_start_a_cooldown_but_never_lengthen_one(board: HealthBoard) -> None:
    for _ in range(4):
        board.record_success("a")
    epoch = board.get("a").failure_epoch  # five requests reach the provider before any of them fails
    for count in range(1, 6):
        record_failure(board, POLICY, "a", f"HTTP 500 #{count}", SERVER_ERROR, epoch=epoch)
    health = board.get("a")
    assert (health.failures, health.consecutive_failures, health.cooldowns) == (5, 1, 1)
    assert board.cooldown_remaining("a") == 10  # started by the fourth (4 of 8), not grown by the fifth
    assert health.cooldown_reason == "HTTP 500 #4"


# -- what the client is told ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ([RATE_LIMITED], (429, "rate_limit_error")),
        ([RATE_LIMITED, RATE_LIMITED, AUTH], (429, "rate_limit_error")),
        ([RATE_LIMITED, OVERLOADED], (529, "overloaded_error")),
        ([SERVER_ERROR, OVERLOADED], (529, "overloaded_error")),
        ([TRANSPORT, RATE_LIMITED], (529, "overloaded_error")),
        ([OVERLOADED], (529, "overloaded_error")),
        ([SERVER_ERROR, TRANSPORT, TIMEOUT, STREAM_ERROR], (503, "api_error")),
        ([AUTH], (503, "api_error")),
        ([], (503, "api_error")),
    ],
)
def test_status_for_failure_classes_429_for_rate_limits_529_for_capacity_else_503(
    kinds: list[str], expected: tuple[int, str],
) -> None:
    assert status_for(kinds) == expected


def test_retry_after_is_the_soonest_wait_in_whole_seconds_at_least_one() -> None:
    assert retry_after_for([]) == 1
    assert retry_after_for([(0.0, False)]) == 1
    assert retry_after_for([(12.1, False), (30.0, True)]) == 13
    assert retry_after_for([(40.0, False), (20.0, True)]) == 20


def test_retry_after_above_a_minute_only_on_the_providers_word() -> None:
    assert retry_after_for([(600.0, False)]) == CLIENT_RETRY_LIMIT == 60
    assert retry_after_for([(900.0, True), (1200.0, False)]) == 900
    assert retry_after_for([(900.0, False), (1200.0, True)]) == 60


def attempt(name: str, kind: str | None, retry_after: float | None = None) -> AttemptRecord:
    return AttemptRecord(name, f"HTTP from {name}", 1.0, failed=kind is not None, kind=kind, retry_after=retry_after)


def test_answer_for_rate_limits_uses_the_providers_retry_after(board: HealthBoard) -> None:
    record_failure(board, POLICY, "a", "HTTP 429", RATE_LIMITED, retry_after=40)
    record_failure(board, POLICY, "b", "HTTP 429", RATE_LIMITED, retry_after=25)
    answer = answer_for(Exhausted([attempt("a", RATE_LIMITED, 40), attempt("b", RATE_LIMITED, 25)]), board)
    assert (answer.status, answer.error_type, answer.retry_after) == (429, "rate_limit_error", 25)


def test_answer_for_leaves_out_providers_out_for_their_credential(board: HealthBoard) -> None:
    record_failure(board, Settings(auth_failure_cooldown=5), "a", "HTTP 401", AUTH)
    record_failure(board, POLICY, "b", "HTTP 429", RATE_LIMITED, retry_after=30)
    answer = answer_for(Exhausted([attempt("a", AUTH), attempt("b", RATE_LIMITED, 30)]), board)
    assert (answer.status, answer.retry_after) == (429, 30)  # not 5: waiting will not fix a's credential

    only_auth = answer_for(Exhausted([attempt("a", AUTH)]), board)
    assert (only_auth.status, only_auth.error_type, only_auth.retry_after) == (503, "api_error", 5)


def test_answer_for_providers_skipped_while_cooling_down(board: HealthBoard, clock: ManualClock) -> None:
    a, b = provider("a"), provider("b")
    record_failure(board, POLICY, "a", "HTTP 429", RATE_LIMITED, retry_after=30)
    record_failure(board, POLICY, "b", "HTTP 429", RATE_LIMITED, retry_after=50)
    clock.advance(5)
    plan = plan_attempts([a, b], board, settings=Settings(all_cooling="refuse"))
    answer = answer_for(Exhausted([], skipped=plan.skipped), board)
    assert (answer.status, answer.retry_after) == (429, 25)

    record_failure(board, POLICY, "c", "connection refused", TRANSPORT)
    plan = plan_attempts([a, b, provider("c")], board, settings=Settings(all_cooling="refuse"))
    answer = answer_for(Exhausted([], skipped=plan.skipped), board)
    assert (answer.status, answer.error_type, answer.retry_after) == (529, "overloaded_error", 10)  # all cooling


# -- a client that leaves --------------------------------------------------------------------------------------

def test_a_client_leaving_cancels_the_attempt_closes_its_connection_and_blames_nobody(board: HealthBoard) -> None:
    async def run() -> tuple[Exhausted, bool]:
        connected, closed = asyncio.Event(), asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")  # the request is in: the balancer waits for headers
            connected.set()
            if await reader.read() == b"":  # nothing more comes until the balancer closes the connection
                closed.set()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a, b = provider("a", f"http://127.0.0.1:{port}"), provider("b", "http://127.0.0.1:9")
        pool = ClientPool()
        gone = False
        task = asyncio.create_task(attempt_in_turn(
            plan_attempts([a, b], board), lambda p: httpx.Request("POST", p.base_url + "/v1/messages"), pool, board,
            Settings(request_timeout=60), open_answer=None, client_gone=lambda: gone))  # type: ignore[arg-type]
        await asyncio.wait_for(connected.wait(), 10)
        gone = True
        result = await asyncio.wait_for(task, 10)
        released = await asyncio.wait_for(closed.wait(), 10)
        await pool.aclose()
        server.close()
        return result, released  # type: ignore[return-value]

    result, released = asyncio.run(run())
    assert released
    assert isinstance(result, Exhausted) and result.client_gone
    [record] = result.attempts  # b was never asked
    assert (record.provider, record.outcome, record.failed, record.kind) == ("a", CLIENT_GONE, False, None)
    health = board.get("a")
    assert (health.requests, health.failures, health.probing) == (1, 0, False)
    assert board.is_available("a")
