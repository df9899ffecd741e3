"""Request limits: deadlines, size/batch/token limits, load shedding, rate limits, a breaker.

Everything here is transport-free. The server grabs a :class:`Deadline` and a slot from the
:class:`ConcurrencyLimiter` per request; the upstream call goes through the
:class:`CircuitBreaker`. Every rejection is a :class:`~infershield.errors.FirewallError` that
names the limit (``LimitExceeded.limit``) or the stage (``DeadlineExceeded.stage``).

All asyncio objects here belong to the event loop that first uses them (the server's loop);
they are not thread-safe, by design: the server runs one loop.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from infershield.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FirewallError,
    LimitExceeded,
    Quarantined,
    UpstreamError,
)

if TYPE_CHECKING:
    from infershield.config import LimitsConfig
    from infershield.tokens import TokenCounter

log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], float]


# --------------------------------------------------------------------------- deadlines


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the monotonic clock by which a stage must finish.

    A request starts with :meth:`effective` (the smaller of the client's gRPC deadline and
    ``limits.deadline_s``); each stage narrows it with :meth:`budget`, so a stage can never
    outlive the request that started it.
    """

    expires_at: float
    stage: str = "request"
    clock: Clock = time.monotonic

    @classmethod
    def after(
        cls, seconds: float, stage: str = "request", *, clock: Clock = time.monotonic
    ) -> Deadline:
        if math.isnan(seconds):
            raise ValueError("a deadline cannot be NaN")
        return cls(clock() + max(0.0, seconds), stage, clock)

    @classmethod
    def effective(
        cls,
        policy_s: float,
        client_remaining_s: float | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> Deadline:
        """min(client deadline, policy deadline); ``None`` means the client set none."""
        seconds = policy_s
        if client_remaining_s is not None and not math.isnan(client_remaining_s):
            seconds = min(seconds, client_remaining_s)
        return cls.after(seconds, "request", clock=clock)

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.expires_at - self.clock())

    @property
    def expired(self) -> bool:
        return self.clock() >= self.expires_at

    def budget(self, stage: str, seconds: float | None = None) -> Deadline:
        """A child deadline for ``stage``: at most ``seconds`` and never past this one."""
        expires = self.expires_at
        if seconds is not None and not math.isnan(seconds):
            expires = min(expires, self.clock() + max(0.0, seconds))
        return Deadline(expires, stage, self.clock)

    def error(self, stage: str | None = None) -> DeadlineExceeded:
        stage = stage or self.stage
        return DeadlineExceeded(f"deadline exceeded in stage {stage!r}", stage=stage)

    def check(self, stage: str | None = None) -> None:
        """Raise DeadlineExceeded naming the stage if the deadline has passed."""
        if self.expired:
            raise self.error(stage)

    async def run(self, aw: Awaitable[T], stage: str | None = None) -> T:
        """Await ``aw`` within the remaining time; on overrun it is cancelled and
        DeadlineExceeded names the stage."""
        try:
            return await asyncio.wait_for(aw, timeout=self.remaining())
        except asyncio.TimeoutError:
            raise self.error(stage) from None


class CheckBudget:
    """Deadline state handed to a pipeline run, which happens in a worker thread.

    Before each check the run stops if the request's deadline has passed or its caller went
    away (:meth:`cancel`); after each check, one that took longer than ``per_check_s`` fails
    the request with DeadlineExceeded naming it (stage ``check:<name>``). A running check
    cannot be interrupted (it may be native code), so these are the points where work for
    an expired or abandoned request stops.
    """

    def __init__(self, deadline: Deadline, per_check_s: float | None = None) -> None:
        self.deadline = deadline
        self.per_check_s = per_check_s
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """The caller is gone (or the stage timed out): run no further checks."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def before(self, check: str) -> None:
        stage = f"check:{check}"
        if self._cancelled.is_set():
            raise DeadlineExceeded(f"request abandoned before check {check!r}", stage=stage)
        self.deadline.check(stage)

    def after(self, check: str, elapsed_s: float) -> None:
        if self.per_check_s is not None and elapsed_s > self.per_check_s:
            raise DeadlineExceeded(
                f"check {check!r} took {elapsed_s:.3f}s; check_budget_s is {self.per_check_s:g}",
                stage=f"check:{check}",
            )


# --------------------------------------------------------------------------- size limits


def check_request_bytes(nbytes: int, limits: LimitsConfig) -> None:
    """The whole request message (all tensors) against ``limits.max_request_bytes``."""
    if nbytes > limits.max_request_bytes:
        raise LimitExceeded(
            f"request is {nbytes} bytes; max_request_bytes is {limits.max_request_bytes}",
            limit="max_request_bytes",
        )


def check_batch_elements(n: int, limits: LimitsConfig) -> None:
    """The number of texts (batch elements) in one request."""
    if n > limits.max_batch_elements:
        raise LimitExceeded(
            f"request has {n} batch elements; max_batch_elements is {limits.max_batch_elements}",
            limit="max_batch_elements",
        )


def check_input_text(
    text: str | bytes, limits: LimitsConfig, counter: TokenCounter | None = None, *, index: int = 0
) -> int:
    """One input sequence: bytes first (cheap, bounds the tokenizer's work), then tokens.

    Returns the token count (0 when no counter is given). ``index`` is the batch element,
    named in the error so a caller can find the offending input.
    """
    nbytes = len(text) if isinstance(text, bytes) else _utf8_len(text)
    if nbytes > limits.max_text_bytes:
        raise LimitExceeded(
            f"input {index} is {nbytes} bytes; max_text_bytes is {limits.max_text_bytes}",
            limit="max_text_bytes",
        )
    if counter is None:
        return 0
    n = counter.count(text if isinstance(text, str) else text.decode("utf-8", "replace"))
    if n > limits.max_input_tokens:
        raise LimitExceeded(
            f"input {index} is {n} tokens; max_input_tokens is {limits.max_input_tokens}",
            limit="max_input_tokens",
        )
    return n


def check_inputs(
    texts: Iterable[str | bytes], limits: LimitsConfig, counter: TokenCounter | None = None
) -> list[int]:
    """Batch size, then every element's bytes and tokens. Returns per-element token counts."""
    items = list(texts)
    check_batch_elements(len(items), limits)
    return [check_input_text(t, limits, counter, index=i) for i, t in enumerate(items)]


def _utf8_len(text: str) -> int:
    # Lone surrogates (possible in str built from untrusted JSON) must not crash the count.
    return len(text.encode("utf-8", "surrogatepass"))


class OutputTokenMeter:
    """Counts output tokens cumulatively, across all chunks of a streamed response."""

    def __init__(self, limit: int, counter: TokenCounter) -> None:
        self.limit = limit
        self.counter = counter
        self.total = 0

    def add(self, text: str) -> int:
        """Count ``text`` into the running total; raise once it passes ``max_output_tokens``."""
        self.total += self.counter.count(text)
        if self.total > self.limit:
            raise LimitExceeded(
                f"response reached {self.total} tokens; max_output_tokens is {self.limit}",
                limit="max_output_tokens",
            )
        return self.total


def check_output_texts(
    texts: Iterable[str],
    limits: LimitsConfig,
    counter: TokenCounter,
    meter: OutputTokenMeter | None = None,
) -> int:
    """Each output element within ``max_output_tokens``; with a ``meter`` (one per streamed
    request) the count is cumulative across all the responses of that request. Returns the
    tokens counted in this call (what the per-caller token bucket is charged)."""
    total = 0
    for text in texts:
        if meter is not None:
            before = meter.total
            meter.add(text)
            total += meter.total - before
            continue
        n = counter.count(text)
        total += n
        if n > limits.max_output_tokens:
            raise LimitExceeded(
                f"response is {n} tokens; max_output_tokens is {limits.max_output_tokens}",
                limit="max_output_tokens",
            )
    return total


# --------------------------------------------------------------------------- load shedding


class ConcurrencyLimiter:
    """At most ``max_concurrency`` requests run; at most ``max_queue`` wait (FIFO).

    Past both, :meth:`slot` raises ``LimitExceeded(limit="max_queue")`` at once instead of
    letting requests pile up. A queued request whose deadline passes, or whose caller goes
    away (task cancelled), leaves the queue without ever holding a slot.
    """

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        if max_concurrency <= 0:
            raise ValueError("max_concurrency must be positive")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.active = 0
        self.shed = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        #: Moving average of how long a slot is held (seconds), for the shed's retry-after.
        self.hold_s = 0.0

    @classmethod
    def from_limits(cls, limits: LimitsConfig) -> ConcurrencyLimiter:
        return cls(limits.max_concurrency, limits.max_queue)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, deadline: Deadline | None = None) -> None:
        if self.active < self.max_concurrency and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.max_queue:
            self.shed += 1
            raise LimitExceeded(
                f"server busy: {self.active} requests running and {len(self._waiters)} queued "
                f"(max_concurrency {self.max_concurrency}, max_queue {self.max_queue})",
                limit="max_queue",
                retry_after_s=self.retry_after_s(),
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            if deadline is None:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), timeout=deadline.remaining())
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us as we gave up: pass it on, don't leak it.
                self._release_one()
            else:
                fut.cancel()
                self._remove(fut)
            if isinstance(exc, asyncio.TimeoutError):
                raise DeadlineExceeded(
                    "deadline exceeded while queued for a free slot", stage="queue"
                ) from None
            raise

    def retry_after_s(self) -> float:
        """About how long the work ahead of a new caller takes to drain: the queue plus one
        round of running requests, each taking the recent average hold time."""
        rounds = (len(self._waiters) + self.max_concurrency) / self.max_concurrency
        return max(0.01, min(rounds * self.hold_s, 30.0))

    def release(self) -> None:
        self._release_one()

    def _release_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot moves straight to the waiter: active unchanged
                return
        self.active -= 1

    def _remove(self, fut: asyncio.Future[None]) -> None:
        with suppress(ValueError):
            self._waiters.remove(fut)

    @asynccontextmanager
    async def slot(self, deadline: Deadline | None = None) -> AsyncIterator[None]:
        """``async with limiter.slot(deadline):`` runs the body holding one slot."""
        await self.acquire(deadline)
        start = time.monotonic()
        try:
            yield
        finally:
            self.release()
            held = time.monotonic() - start
            self.hold_s = held if self.hold_s == 0.0 else self.hold_s + 0.05 * (held - self.hold_s)


# --------------------------------------------------------------------------- rate limiting


class RateLimiter:
    """Token buckets keyed by caller: ``rate`` requests per second with bursts of ``burst``.

    The number of buckets is bounded (least recently used callers are forgotten), so a flood
    of distinct caller ids cannot grow memory without bound. A forgotten caller starts again
    with a full bucket, which errs on the side of serving.
    """

    def __init__(
        self, rate: float, burst: float, *, max_keys: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def try_acquire(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``key``'s bucket or raise ``LimitExceeded(limit="rate")``."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            retry = (cost - tokens) / self.rate
            raise LimitExceeded(
                f"rate limit exceeded for this caller ({self.rate:g}/s, burst {self.burst:g}); "
                f"retry in {retry:.2f}s",
                limit="rate",
                retry_after_s=retry,
            )
        self._buckets[key] = (tokens - cost, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


# --------------------------------------------------------------------------- quarantine


class Quarantine:
    """Automated incident response: callers that keep getting blocked are shut out for a while.

    ``strike(key)`` records one blocked request; ``after`` strikes within ``window_s`` put the
    caller in quarantine for ``duration_s``, during which ``check(key)`` raises
    :class:`~infershield.errors.Quarantined`. Both maps are bounded (least recently used
    callers are forgotten) so a flood of distinct callers cannot grow memory without bound.
    """

    def __init__(
        self,
        after: int,
        window_s: float,
        duration_s: float,
        *,
        max_keys: int = 10_000,
        clock: Clock = time.monotonic,
        on_quarantine: Callable[[str], None] | None = None,
    ) -> None:
        if after < 1 or not window_s > 0 or not duration_s > 0:
            raise ValueError("after must be >= 1 and the durations positive")
        self.after = after
        self.window_s = window_s
        self.duration_s = duration_s
        self.max_keys = max_keys
        self._clock = clock
        self._on_quarantine = on_quarantine
        self._strikes: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._until: collections.OrderedDict[str, float] = collections.OrderedDict()

    def check(self, key: str) -> None:
        """Raise ``Quarantined`` if ``key`` is in quarantine now."""
        until = self._until.get(key)
        if until is None:
            return
        left = until - self._clock()
        if left <= 0:
            del self._until[key]
            return
        raise Quarantined(
            "this caller is quarantined after repeated blocked requests; "
            f"retry in {left:.0f}s",
            retry_after_s=left,
        )

    def strike(self, key: str) -> bool:
        """Record a blocked request by ``key``; True when this strike starts a quarantine."""
        now = self._clock()
        hits = self._strikes.pop(key, None) or collections.deque()
        hits.append(now)
        while hits and now - hits[0] > self.window_s:
            hits.popleft()
        if len(hits) >= self.after:
            self._until.pop(key, None)
            self._until[key] = now + self.duration_s
            while len(self._until) > self.max_keys:
                self._until.popitem(last=False)
            if self._on_quarantine is not None:
                self._on_quarantine(key)
            return True
        self._strikes[key] = hits
        while len(self._strikes) > self.max_keys:
            self._strikes.popitem(last=False)
        return False

    def is_quarantined(self, key: str) -> bool:
        try:
            self.check(key)
        except Quarantined:
            return True
        return False


# --------------------------------------------------------------------------- circuit breaker


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def is_upstream_failure(exc: BaseException) -> bool:
    """Errors that say the upstream is unhealthy (not that the caller's request was bad)."""
    import grpc

    if isinstance(exc, BackendUnavailable):
        return True
    if isinstance(exc, DeadlineExceeded):
        return exc.stage.startswith("upstream")
    if isinstance(exc, UpstreamError):
        return exc.grpc_code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
    if isinstance(exc, FirewallError):
        return False
    return isinstance(exc, (OSError, ConnectionError))


class CircuitBreaker:
    """Stops calling an upstream that keeps failing, and probes it back to health.

    CLOSED: calls pass; ``failure_threshold`` consecutive failures open the breaker.
    OPEN: calls fail at once with BackendUnavailable (no upstream load, no waiting) until
    ``reset_timeout_s`` has passed, then the breaker turns HALF_OPEN.
    HALF_OPEN: up to ``half_open_probes`` calls go through as probes; ``success_threshold``
    successes close the breaker, any failure opens it again for another ``reset_timeout_s``.
    """

    def __init__(
        self,
        name: str = "upstream",
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 5.0,
        half_open_probes: int = 1,
        success_threshold: int = 1,
        is_failure: Callable[[BaseException], bool] = is_upstream_failure,
        clock: Clock = time.monotonic,
        on_state_change: Callable[[BreakerState], object] | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_probes < 1 or success_threshold < 1:
            raise ValueError("breaker thresholds must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_probes = half_open_probes
        self.success_threshold = min(success_threshold, half_open_probes) or 1
        self.is_failure = is_failure
        self._clock = clock
        #: Called with the new state on every transition (metrics, logs).
        self.on_state_change = on_state_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._probes = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout_s
        ):
            self._probes = self._successes = 0
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self.on_state_change is not None:
            self.on_state_change(state)

    def before_call(self) -> None:
        """Admit one call or raise BackendUnavailable; pair with on_success/on_failure."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and self._probes < self.half_open_probes:
            self._probes += 1
            return
        wait = max(0.0, self.reset_timeout_s - (self._clock() - self._opened_at))
        raise BackendUnavailable(
            f"{self.name} circuit breaker is open after repeated failures; "
            f"next probe in {wait:.1f}s"
        )

    def on_success(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self.success_threshold:
                log.info("%s circuit breaker closed: probe succeeded", self.name)
                self._set(BreakerState.CLOSED)
        self._failures = 0

    def on_failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open("probe failed")
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._open(f"{self._failures} consecutive failures")

    def _open(self, why: str) -> None:
        log.warning("%s circuit breaker opened: %s", self.name, why)
        self._opened_at = self._clock()
        self._failures = 0
        self._set(BreakerState.OPEN)

    def on_cancel(self) -> None:
        """The caller went away: the call proved nothing, so a probe slot is returned."""
        if self._state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` under the breaker; failures per ``is_failure`` count against it."""
        self.before_call()
        try:
            result = await fn()
        except asyncio.CancelledError:
            self.on_cancel()
            raise
        except BaseException as exc:
            if self.is_failure(exc):
                self.on_failure()
            else:
                self.on_success()  # the upstream answered; the request itself was bad
            raise
        self.on_success()
        return result
