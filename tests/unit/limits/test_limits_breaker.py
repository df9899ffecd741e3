"""The circuit breaker around the upstream."""

from __future__ import annotations

import asyncio

import pytest

from clock_support import FakeClock
from infershield.errors import BackendUnavailable, InvalidRequest
from infershield.limits.breaker import BreakerState, CircuitBreaker


def test_breaker_opens_fails_fast_probes_and_closes() -> None:
    clock = FakeClock()
    seen: list[str] = []
    br = CircuitBreaker(
        "triton",
        failure_threshold=3,
        reset_timeout_s=5,
        clock=clock,
        on_state_change=lambda s: seen.append(s.value),
    )
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise BackendUnavailable("upstream down")

    async def ok() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(BackendUnavailable, match="upstream down"):
                await br.call(failing)
        assert br.state is BreakerState.OPEN
        with pytest.raises(BackendUnavailable, match="circuit breaker is open"):
            await br.call(ok)
        assert calls == 3  # open: the upstream is not called at all
        clock.now += 5
        assert br.state is BreakerState.HALF_OPEN
        with pytest.raises(BackendUnavailable, match="upstream down"):
            await br.call(failing)  # the probe fails: open again
        assert br.state is BreakerState.OPEN
        clock.now += 5
        assert await br.call(ok) == "ok"
        assert br.state is BreakerState.CLOSED
        assert seen == ["open", "half_open", "open", "half_open", "closed"]

    asyncio.run(main())


def test_breaker_ignores_caller_errors_and_limits_probes() -> None:
    clock = FakeClock()
    br = CircuitBreaker(failure_threshold=2, reset_timeout_s=1, clock=clock)

    async def bad_request() -> None:
        raise InvalidRequest("bad tensor")

    async def main() -> None:
        for _ in range(5):
            with pytest.raises(InvalidRequest):
                await br.call(bad_request)
        assert br.state is BreakerState.CLOSED
        br.on_failure()
        br.on_failure()
        clock.now += 1
        br.before_call()  # the single probe
        with pytest.raises(BackendUnavailable):
            br.before_call()  # a second concurrent probe is refused
        br.on_cancel()  # the probe's caller went away: the probe slot is returned
        br.before_call()
        br.on_success()
        assert br.state is BreakerState.CLOSED

    asyncio.run(main())
