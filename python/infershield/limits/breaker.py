"""A circuit breaker around the upstream call: stop calling an upstream that keeps failing."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from infershield.errors import BackendUnavailable, DeadlineExceeded, FirewallError, UpstreamError
from infershield.limits.deadline import Clock

log = logging.getLogger(__name__)
T = TypeVar("T")


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def is_upstream_failure(exc: BaseException) -> bool:
    """Errors that say the upstream is unhealthy (not that the caller's request was bad)."""
    if isinstance(exc, BackendUnavailable):
        return True
    if isinstance(exc, DeadlineExceeded):
        return exc.stage.startswith("upstream")
    if isinstance(exc, UpstreamError):
        return exc.unhealthy
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
