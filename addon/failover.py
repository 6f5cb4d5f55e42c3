"""One request, tried on each planned provider in turn until one answers acceptably."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from .answer_body import read_body
from .config import ProviderConfig, Settings
from .exchange import Answer, RetryWithout
from .health import (
    AUTH,
    OVERLOADED,
    RATE_LIMITED,
    SERVER_ERROR,
    TIMEOUT,
    TRANSPORT,
    HealthBoard,
    cooldown_seconds,
)
from .hedging import HedgeDue, Race, Solo, Stop, race_for, retrieve_exception
from .key_book import KeyBook
from .key_routing import KeyTurn, all_keys_cooling, key_turns, keys_to_try
from .open_files import LOCAL, is_descriptor_exhaustion
from .provider_wire import ProviderWire
from .routing import Plan, soonest_back_first
from .stream_guard import StreamFailure
from .upstream import ClientPool, describe_exception, should_fail_over

ERROR_BODY_LIMIT = 16 * 1024
# An attempt's outcome, and the status in the request log, when the client left before it was answered.
CLIENT_GONE = "client gone"
# How often a waiting attempt looks whether its client is still there (a provider is released within this).
CLIENT_CHECK_INTERVAL = 0.2
# A retry-after beyond this is taken as this (a misconfigured provider must not vanish for days).
RETRY_AFTER_CEILING = 24 * 3600.0

# Opens an acceptable answer (provider, response, deadline) for relaying, or raises StreamFailure when it turns
# out to be a failure before anything reached the client (the stream's commit point).
AnswerOpener = Callable[[ProviderConfig, httpx.Response, float], Awaitable[Answer]]


@dataclass
class AttemptRecord:
    provider: str
    outcome: str  # "200", "HTTP 529 overloaded_error: Overloaded", "connection refused", ...
    ms: float
    failed: bool
    kind: str | None = None  # failure class (health.py), None when not failed
    retry_after: float | None = None  # seconds, as the provider asked with its failure
    wire: ProviderWire | None = None  # what went over the wire, when attempts are captured
    retried: AttemptRecord | None = None  # the try before this one at the same provider, which it answered
    key: str | None = None  # which key of a pool (`#2`); None for a provider with a single key
    headers: httpx.Headers | None = None  # the provider's answer's headers, when it answered
    hedge: bool = False  # started beside another provider's attempt that had no content yet (hedging.py)


@dataclass
class Success:
    provider: ProviderConfig
    request: httpx.Request
    response: httpx.Response  # headers read
    answer: Answer  # what the client gets
    attempts: list[AttemptRecord]
    key: KeyTurn | None = None  # the key that served (open until the answer ends: KeyBook.ended)


@dataclass
class Exhausted:
    attempts: list[AttemptRecord]
    skipped: list[tuple[ProviderConfig, str]] = field(default_factory=list)
    client_gone: bool = False  # stopped because nobody waits for the answer any more

    def summary(self, route: str | None = None) -> str:
        """What the client is told; `route`: the route whose providers were all that was tried (None: every
        provider's turn came)."""
        parts = [f"{a.provider}{a.key or ''}: {a.outcome}" for a in self.attempts]
        parts += [f"{p.name}: {reason}" for p, reason in self.skipped]
        if not parts:
            return "no enabled provider can serve this request"
        whose = f"all providers of route {route!r}" if route is not None else "all providers"
        return f"{whose} failed: " + "; ".join(parts)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from `retry-after`: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, OverflowError, AttributeError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CEILING)


def failure_class(status: int, detail: str) -> str:
    if status in (401, 403):
        return AUTH
    if status == 429:
        return RATE_LIMITED
    if status in (503, 529) or "overloaded" in detail:
        return OVERLOADED
    return SERVER_ERROR


async def error_summary(response: httpx.Response, deadline: float) -> str:
    """`overloaded_error: Overloaded` from an error body (bounded in size and time), or "" when it says
    nothing useful."""
    try:
        body, _ = await read_body(response, max(deadline, time.monotonic() + 1.0), ERROR_BODY_LIMIT)
    finally:
        await response.aclose()
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        text = ": ".join(str(x) for x in (kind, message) if x)
    elif isinstance(error, str):
        text = error
    else:
        return ""
    return text[:160]


def _is_failover_status(provider: ProviderConfig, status: int) -> bool:
    # A refused credential fails over, unless it is the client's own (passthrough): that is the client's to see.
    if status in (401, 403):
        return provider.auth_type != "passthrough"
    return should_fail_over(status)


# Failures of one key of a pool: the next key of the same provider is tried before any other provider.
KEY_FAILURES = frozenset({RATE_LIMITED, AUTH})


async def attempt_in_turn(
    plan: Plan,
    build_request: Callable[[ProviderConfig], httpx.Request],
    pool: ClientPool,
    board: HealthBoard,
    settings: Settings,
    open_answer: AnswerOpener,
    penalize: bool = True,
    redact: Callable[[str], str] = str,
    client_gone: Callable[[], bool] | None = None,
    capture: int | None = None,
    keys: KeyBook | None = None,
    session: str | None = None,
) -> Success | Exhausted:
    """Send to each planned provider in turn: the usable ones, then those cooling down (soonest back first). A
    transport error, no headers within `request_timeout`, a failover status, or a failure before the stream's
    commit point moves on (and, with `penalize`, counts against the provider); any other answer is returned with
    its body ready to relay. When the client leaves, the attempt under way is cancelled and nobody is blamed.
    Every reason taken from a provider passes through `redact`. With `capture` (a number of body bytes), each
    attempt's record keeps what went over the wire (`AttemptRecord.wire`).

    With `keys`, a provider's keys are tried in the order key_routing.py gives (sticky per `session`): a key of a
    pool that is rate-limited or refused counts against that key alone, and the request moves to the provider's
    next key; a provider cools down when all its keys do. Every answer's rate-limit headers go to `keys`.

    With `settings.hedge_after`, an attempt that has produced no content (a stream's first content, a whole answer)
    after that many seconds gets the next provider started beside it (hedging.py): the first to serve is returned
    and the other called off at once (recorded as `cancelled: hedge lost to ...`, nobody's failure)."""
    attempts: list[AttemptRecord] = []
    skipped = list(plan.skipped)
    deferred: list[ProviderConfig] = []
    try_all = settings.all_cooling == "try_soonest"

    def usable() -> Iterable[ProviderConfig]:
        for position, provider in enumerate(plan.usable):
            if position > 0 and penalize and not board.is_available(provider.name):
                # It failed for another request while this one waited on an earlier provider.
                if try_all:
                    deferred.append(provider)
                else:
                    skipped.append((provider, "failed meanwhile for another request"))
                continue
            yield provider

    def later() -> Iterable[ProviderConfig]:
        yield from soonest_back_first([*plan.later, *deferred], board)

    first, rest = iter(usable()), iter(later())
    race: Race[_Lane, Success | _Failed] | Solo[_Lane, Success | _Failed] = race_for(settings.hedge_after)

    def gone() -> bool:
        return client_gone is not None and client_gone()

    def start(lane: _Lane) -> bool:
        """The lane's next key under way; False when it has none left or nobody waits for the answer."""
        if lane.tried == len(lane.turns) or gone():
            return False
        lane.turn = lane.turns[lane.tried]
        lane.tried += 1
        race.start(lane, functools.partial(
            _attempt_key, lane.provider, lane.turn, build_request, pool, board, settings, open_answer, penalize,
            client_gone, capture, keys,
        ))
        return True

    hold_back: list[ProviderConfig] = []  # last resorts a hedge passed over, in order: next when no hedge is

    def start_next_provider(hedge: bool = False) -> None:
        """The next planned provider under way. A hedge goes only to a usable provider that can serve the request
        well: one cooling down (its retry-after not over, say) or a last resort is asked once the others failed."""
        while True:
            provider = next(first, None)
            if provider is not None and hedge and provider.name in plan.last_resort:
                hold_back.append(provider)
                continue
            if provider is None:
                if hedge:
                    return
                provider = hold_back.pop(0) if hold_back else next(rest, None)
                if provider is None:
                    return
            turns: list[KeyTurn | None] = []
            if keys is not None:
                turns += keys_to_try(key_turns(provider, board, keys, session), board)
            if start(_Lane(provider, turns or [None])) or gone():
                return

    def failed(lane: _Lane, failure: _Failed, hedge: bool) -> bool:
        """Record an attempt that did not serve; whether its provider's next key is to be tried."""
        record = failure.record
        for each in (record.retried, record):
            if each is not None:
                each.hedge = hedge
        if failure.client_gone or failure.called_off:  # nobody's failure
            attempts.append(record)
            return False
        record.outcome = redact(record.outcome)
        if record.retried is not None:  # the provider's first try, which it refused in part
            attempts.append(record.retried)
        attempts.append(record)
        kind = record.kind or TRANSPORT
        if lane.turn is not None and lane.provider.is_pool and kind in KEY_FAILURES:
            if penalize:
                _key_failed(board, settings, lane.provider, lane.turn, record, failure.epoch)
            return True
        if penalize:
            record_failure(board, settings, lane.provider.name, record.outcome, kind, record.retry_after,
                           failure.epoch[0])
        return False

    async def call_off(reason: str) -> None:
        for other in await race.call_off(reason):
            if isinstance(other.outcome, Success):
                for record in other.outcome.attempts:
                    record.hedge = other.hedge
                attempts.extend(await _set_aside(other.outcome, f"cancelled: {reason}", keys))
            else:
                failed(other.label, other.outcome, other.hedge)

    # An error answer (a 400, say) that came while another attempt was still under way: the other may yet serve,
    # so this one is the answer only when the other fails or errors too (no further provider is started for it).
    held: Success | None = None

    async def serve(success: Success) -> Success:
        nonlocal held
        if held is not None and held is not success:
            attempts.extend(await _set_aside(held, f"{held.answer.status}, not used: "
                                                   f"{success.provider.name} served", keys))
        held = None
        success.attempts[:0] = attempts
        return success

    start_next_provider()
    try:
        while race.in_flight:
            event = await race.next()
            if isinstance(event, HedgeDue):
                if held is None:
                    start_next_provider(hedge=True)  # beside the slow one
                continue
            lane, outcome = event.label, event.outcome
            if isinstance(outcome, Success):
                for record in outcome.attempts:
                    record.hedge = event.hedge
                if outcome.answer.status >= 400 and (held is not None or race.in_flight):
                    if held is None:
                        held = outcome  # the other attempt may still serve
                        continue
                    attempts.extend(await _set_aside(outcome, f"{outcome.answer.status}, not used: "
                                                              f"{held.provider.name} answered first", keys))
                    return await serve(held)
                await call_off(f"hedge lost to {lane.provider.name}")
                return await serve(outcome)
            if outcome.client_gone:
                failed(lane, outcome, event.hedge)
                await call_off(CLIENT_GONE)
                if held is not None:
                    attempts.extend(await _set_aside(held, CLIENT_GONE, keys))
                    held = None
                return Exhausted(attempts=attempts, skipped=skipped, client_gone=True)
            retry_key = failed(lane, outcome, event.hedge)
            if held is not None:
                if not race.in_flight:
                    return await serve(held)
                continue
            if retry_key and start(lane):
                continue
            if not race.in_flight:
                start_next_provider()
    except BaseException:
        race.abandon()
        if held is not None:
            _drop(held, keys)
        raise
    return Exhausted(attempts=attempts, skipped=skipped, client_gone=gone())


@dataclass
class _Lane:
    """One provider's part in a request: its keys tried one after another (`[None]`: the provider as configured)."""

    provider: ProviderConfig
    turns: list[KeyTurn | None]
    tried: int = 0
    turn: KeyTurn | None = None  # the key of the attempt under way


async def _set_aside(success: Success, outcome: str, keys: KeyBook | None) -> list[AttemptRecord]:
    """An answer the client does not get (another attempt's serves): closed unread, its key released; its records,
    the last saying `outcome`."""
    await success.response.aclose()
    if keys is not None and success.key is not None:
        keys.ended(success.key.subject)
    success.attempts[-1].outcome = outcome
    return success.attempts


def _drop(success: Success, keys: KeyBook | None) -> None:
    """`_set_aside` without waiting (the request is going away): the answer closed in the background."""
    if keys is not None and success.key is not None:
        keys.ended(success.key.subject)
    asyncio.ensure_future(success.response.aclose()).add_done_callback(retrieve_exception)


async def _attempt_key(
    provider: ProviderConfig,
    turn: KeyTurn | None,
    build_request: Callable[[ProviderConfig], httpx.Request],
    pool: ClientPool,
    board: HealthBoard,
    settings: Settings,
    open_answer: AnswerOpener,
    penalize: bool,
    client_gone: Callable[[], bool] | None,
    capture: int | None,
    keys: KeyBook | None,
    stop: Stop | None = None,
) -> Success | _Failed:
    """One attempt at the provider with one of its keys (`turn`; None: the provider as configured): a Success
    (whose key stays open in `keys`), or the failed attempt (or the one called off: the client left, or `stop`)."""
    pool_key = turn is not None and provider.is_pool
    names = [provider.name] + ([turn.health] if turn is not None and pool_key else [])
    epoch = (board.get(provider.name).failure_epoch, board.get(names[-1]).failure_epoch)
    if penalize:
        for name in names:
            board.record_attempt(name)
    if keys is not None and turn is not None:
        keys.started(turn.subject)
    label = turn.label if turn is not None and pool_key else None
    started = time.perf_counter()
    wire = ProviderWire(provider.name, capture) if capture is not None else None
    keyed = provider.with_key(turn.index) if turn is not None else provider
    try:
        outcome = await _until_stopped(
            _attempt(keyed, build_request, pool, settings, open_answer, wire), client_gone, stop
        )
    except BaseException:
        # Cancelled (or a bug): whatever happened, this attempt must not leave the provider marked as probed.
        if penalize:
            for name in names:
                board.record_neutral(name)
        if keys is not None and turn is not None:
            keys.ended(turn.subject)
        raise
    served = isinstance(outcome, Success)
    if keys is not None and turn is not None:
        headers = (outcome.response.headers if isinstance(outcome, Success)
                   else outcome.headers if isinstance(outcome, AttemptRecord) else None)
        if headers is not None:
            keys.observe(turn.subject, headers.multi_items())
        if not served:
            keys.ended(turn.subject)
    if isinstance(outcome, str):  # called off (the client left, another attempt served): nobody's failure
        if penalize:
            for name in names:
                board.record_neutral(name)
        gone = outcome == CLIENT_GONE
        if wire is not None:
            wire.failed("the client left before an answer: the attempt was cancelled" if gone
                        else f"the attempt was cancelled: {outcome}")
        ms = (time.perf_counter() - started) * 1000
        record = AttemptRecord(provider.name, CLIENT_GONE if gone else f"cancelled: {outcome}", ms, False, wire=wire,
                               key=label)
        return _Failed(record, epoch, client_gone=gone, called_off=not gone)
    if isinstance(outcome, Success):
        ms = outcome.attempts[-1].ms
        for record in outcome.attempts:  # with a retry inside the attempt, two tries with the same key
            record.key = label
        outcome.key = turn
        if penalize:
            for name in names:
                if outcome.response.status_code < 400:
                    board.record_success(name, ms if name == provider.name else None)
                else:
                    board.record_neutral(name)
        return outcome
    outcome.key = label
    if outcome.retried is not None:
        outcome.retried.key = label
    return _Failed(outcome, epoch)


@dataclass
class _Failed:
    record: AttemptRecord
    epoch: tuple[int, int]  # failure epochs of the provider and of the key when the attempt started
    client_gone: bool = False  # the client left: the attempt was cancelled, nobody is to blame
    called_off: bool = False  # another attempt served first: this one was cancelled, nobody is to blame


def _key_failed(
    board: HealthBoard, settings: Settings, provider: ProviderConfig, turn: KeyTurn, record: AttemptRecord,
    epoch: tuple[int, int],
) -> None:
    """A key of a pool was rate-limited or refused: it cools down by itself; the provider only when every key of it
    is cooling down, until the first is back (a refused credential's cooldown counts only when all are refused)."""
    kind = record.kind or RATE_LIMITED
    board.record_neutral(provider.name)
    record_failure(board, settings, turn.health, record.outcome, kind, record.retry_after, epoch[1])
    if not all_keys_cooling(provider, board) or board.is_cooling_down(provider.name):
        return
    names = provider.key_subjects
    hopeful = [n for n in names if board.get(n).cooldown_class != AUTH]
    soonest = min(hopeful or names, key=board.cooldown_remaining)
    reason = f"all {len(names)} keys cooling down, the soonest back after {board.get(soonest).cooldown_reason}"
    board.cool_down(provider.name, board.cooldown_remaining(soonest), reason,
                    board.get(soonest).cooldown_class or kind)


async def _until_stopped(
    work: Awaitable[Success | AttemptRecord], client_gone: Callable[[], bool] | None, stop: Stop | None
) -> Success | AttemptRecord | str:
    """The attempt's outcome; or, when the client leaves or `stop` is set first, why it was called off (CLIENT_GONE,
    or the stop's reason): the attempt is then cancelled (which closes its provider connection) at once for `stop`,
    within CLIENT_CHECK_INTERVAL of the client leaving.

    The work runs in the caller's task, cancelled from a timer or the stop's listener (as asyncio.timeout()
    does), not in a task of its own beside one waiting on the stop: the common attempt makes no task and no
    wait of its own."""
    if client_gone is None and stop is None:
        return await work
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    cancelling = task.cancelling()
    reason: str | None = None
    check: asyncio.TimerHandle | None = None

    def call_off(why: str) -> None:
        nonlocal reason
        if reason is None:
            reason = why
            task.cancel()

    def check_client() -> None:
        nonlocal check
        assert client_gone is not None
        if client_gone():
            check = None
            call_off(CLIENT_GONE)
        else:
            check = loop.call_later(CLIENT_CHECK_INTERVAL, check_client)

    if client_gone is not None:
        check = loop.call_later(CLIENT_CHECK_INTERVAL, check_client)
    if stop is not None:
        stop.listen(call_off)
    try:
        outcome = await work
    except asyncio.CancelledError:
        # Ours only when nobody else cancelled the task meanwhile (then theirs goes on).
        if reason is None or task.uncancel() > cancelling:
            raise
        return reason
    finally:
        if check is not None:
            check.cancel()
        if stop is not None:
            stop.forget(call_off)
    if reason is None:
        return outcome
    task.uncancel()  # the work finished despite the cancellation: nobody will read it
    if isinstance(outcome, Success):
        await outcome.response.aclose()
    return reason


async def _attempt(
    provider: ProviderConfig,
    build_request: Callable[[ProviderConfig], httpx.Request],
    pool: ClientPool,
    settings: Settings,
    open_answer: AnswerOpener,
    wire: ProviderWire | None = None,
) -> Success | AttemptRecord:
    """One provider: a Success (whose attempt records are this provider's), or the failed attempt. `wire`, when
    given, records what was sent and what came back as it is read. A provider that refuses part of the request
    the request can do without (`RetryWithout`) is sent it once more, rebuilt, within the same deadline: both tries
    are recorded, the first as not failed."""
    sent = time.monotonic()
    deadline = sent + settings.request_timeout
    # A stream's first content may come long after its headers (a model thinking silently).
    content_deadline = sent + settings.first_content_wait
    outcome = await _send(provider, build_request(provider), pool, settings, open_answer, wire, deadline,
                          content_deadline)
    if not isinstance(outcome, _Refused):
        return outcome
    status = outcome.retry.status
    if deadline - time.monotonic() <= 0:  # no time left for a second try: the refusal is the answer
        record = AttemptRecord(provider.name, str(status), outcome.ms, failed=False, wire=wire)
        return Success(provider, outcome.request, outcome.response, outcome.retry.answer, [record])
    rebuilt = build_request(provider)
    if same_request(rebuilt, outcome.request):  # the fixes change nothing: the same refusal would come back
        record = AttemptRecord(provider.name, str(status), outcome.ms, failed=False, wire=wire)
        return Success(provider, outcome.request, outcome.response, outcome.retry.answer, [record])
    first = AttemptRecord(provider.name, f"HTTP {status}, retried {outcome.retry.what}", outcome.ms, failed=False,
                          wire=wire)
    again_wire = ProviderWire(wire.provider, wire.limit) if wire is not None else None
    again = await _send(provider, rebuilt, pool, settings, open_answer, again_wire, deadline,
                        content_deadline, retried=True)
    assert not isinstance(again, _Refused)
    if isinstance(again, Success):
        again.attempts[:0] = [first]
    else:
        again.retried = first
    return again


def same_request(a: httpx.Request, b: httpx.Request) -> bool:
    """Whether two requests would reach the provider the same (a retry of one as the other would be futile)."""
    return (a.method == b.method and a.url == b.url and a.content == b.content
            and a.headers.multi_items() == b.headers.multi_items())


@dataclass
class _Refused:
    """The provider refused part of the request that can be left out: build it again and retry."""

    retry: RetryWithout
    request: httpx.Request
    response: httpx.Response
    ms: float


async def _send(
    provider: ProviderConfig,
    request: httpx.Request,
    pool: ClientPool,
    settings: Settings,
    open_answer: AnswerOpener,
    wire: ProviderWire | None,
    deadline: float,
    content_deadline: float,
    retried: bool = False,
) -> Success | AttemptRecord | _Refused:
    """One request to the provider: its headers by `deadline`, a stream's first content by `content_deadline`."""
    # httpx's own limits as well as the header deadline below: a cancellation that lands while anyio is still
    # connecting can be lost, and then these are what bound the attempt.
    request.extensions["timeout"] = httpx.Timeout(
        settings.request_timeout, read=settings.stream_idle_timeout
    ).as_dict()
    client = pool.get(provider.proxy)
    started = time.perf_counter()
    retry_after: float | None = None
    headers: httpx.Headers | None = None
    if wire is not None:
        wire.sending(request)
    try:
        response = await asyncio.wait_for(client.send(request, stream=True), deadline - time.monotonic())
    except TimeoutError:
        reason, kind = f"no response headers within {settings.request_timeout:g}s", TIMEOUT
        if wire is not None:
            wire.failed(reason)
    except (httpx.HTTPError, OSError) as exc:
        reason = describe_exception(exc)
        kind = TIMEOUT if isinstance(exc, httpx.TimeoutException) else TRANSPORT
        kind = LOCAL if is_descriptor_exhaustion(exc) else kind  # the balancer's shortage, not the provider's
        if wire is not None:
            wire.failed(reason)
    else:
        if wire is not None:
            wire.answered(response)  # from here on the body is copied as it is read
        status = response.status_code
        headers = response.headers
        if not _is_failover_status(provider, status):
            try:
                answer = await open_answer(provider, response, content_deadline)
            except StreamFailure as failure:
                await response.aclose()
                reason, kind = failure.reason, failure.kind
            except RetryWithout as retry:
                await response.aclose()
                ms = (time.perf_counter() - started) * 1000
                if not retried:
                    return _Refused(retry, request, response, ms)
                record = AttemptRecord(provider.name, str(status), ms, failed=False, wire=wire)
                return Success(provider, request, response, retry.answer, [record])
            except BaseException:
                await response.aclose()
                raise
            else:
                ms = (time.perf_counter() - started) * 1000
                record = AttemptRecord(provider.name, str(status), ms, failed=False, wire=wire)
                return Success(provider, request, response, answer, [record])
        else:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            detail = await error_summary(response, deadline)
            reason = f"HTTP {status}" + (f" {detail}" if detail else "")
            kind = failure_class(status, detail)
    ms = (time.perf_counter() - started) * 1000
    return AttemptRecord(provider.name, reason, ms, failed=True, kind=kind, retry_after=retry_after, wire=wire,
                         headers=headers)


# Failures that say the provider cannot serve at all right now, or that cost a whole `request_timeout`: they cool it
# down at once. Error answers (5xx, 529, a 429 without retry-after, a failed stream) go by the failure rate.
COOLS_AT_ONCE = frozenset({TRANSPORT, TIMEOUT, AUTH})


def cools_down(kind: str, retry_after: float | None, cooldowns: int, failure_rate: float, threshold: float) -> bool:
    """Whether a failure starts a cooldown: at once for an unreachable, silent or refusing provider, one that said
    when to come back (retry-after), or one already recovering from a cooldown; otherwise when failures make up at
    least `threshold` of its latest outcomes (`failure_rate`, this failure included)."""
    if kind in COOLS_AT_ONCE or retry_after is not None or cooldowns > 0:
        return True
    return failure_rate >= threshold


def record_failure(
    board: HealthBoard,
    settings: Settings,
    name: str,
    reason: str,
    kind: str,
    retry_after: float | None = None,
    epoch: int | None = None,
) -> None:
    """Count a failure and, under the configured policy, cool the provider down. `epoch`: the provider's failure
    epoch when the attempt started; an attempt that started before another failure was recorded counts, but does
    not lengthen the streak nor a cooldown already started (concurrent requests are one outage, not many)."""
    if kind == LOCAL:  # the balancer ran out of descriptors: nothing is held against the provider
        board.record_neutral(name)
        return
    fresh = board.count_failure(name, reason, kind, epoch)
    health = board.get(name)
    if not fresh and health.cooldowns > 0:
        return
    if not cools_down(kind, retry_after, health.cooldowns, health.failure_rate, settings.failure_rate):
        return
    if kind == AUTH:
        cooldown = max(settings.auth_failure_cooldown, retry_after or 0.0)
    else:
        # The first cooldown since the provider last succeeded lasts failure_cooldown; each further one is longer.
        cooldown = cooldown_seconds(
            settings.failure_cooldown, settings.cooldown_growth, settings.max_cooldown, health.cooldowns + 1,
            retry_after,
        )
    board.cool_down(name, cooldown, reason, kind)
