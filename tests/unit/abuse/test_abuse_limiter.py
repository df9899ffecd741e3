"""CallerLimits: which buckets apply, the two axes, and what happens when the store fails."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from infershield.abuse.limiter import CallerLimits, is_loopback
from infershield.abuse.store import Bucket, MemoryStore, StoreUnavailable, Take
from infershield.config import RateLimitConfig, RateSpec
from infershield.errors import LimitExceeded, Quarantined


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FlakyStore(MemoryStore):
    """A 'remote' store that can go down (raises StoreUnavailable) and come back."""

    name = "flaky"

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.down = False
        self.calls = 0

    async def take(self, *args: Any, **kwargs: Any) -> Take:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("down")
        return await super().take(*args, **kwargs)

    async def quarantine(self, key: str, seconds: float) -> None:
        if self.down:
            raise StoreUnavailable("down")
        await super().quarantine(key, seconds)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def admitted(limits: CallerLimits, caller: str, n: int, model: str = "") -> int:
    ok = 0
    for _ in range(n):
        try:
            await limits.admit(caller, model)
            ok += 1
        except LimitExceeded:
            pass
    return ok


def test_bucket_resolution_models_then_loopback_then_default() -> None:
    cfg = RateLimitConfig(
        default=RateSpec(requests_per_s=10),
        loopback=RateSpec(requests_per_s=100, tokens_per_s=1000, tokens_burst=5000),
        models={"big": RateSpec(requests_per_s=1, requests_burst=2)},
    )
    lim = CallerLimits(cfg, MemoryStore())
    assert lim.buckets("ipv4:10.1.1.1", "m").requests == Bucket(10, 10)
    assert lim.buckets("ipv4:10.1.1.1", "m").tokens is None
    assert lim.buckets("ipv4:127.0.0.1", "m").tokens == Bucket(1000, 5000)
    assert lim.buckets("ipv4:127.0.0.1", "big").requests == Bucket(1, 2)
    assert lim.buckets("ipv4:127.0.0.1", "big").scope == "big"
    assert lim.enabled
    assert not CallerLimits(RateLimitConfig(), MemoryStore()).enabled


@pytest.mark.parametrize(
    ("caller", "loop"),
    [("ipv4:127.0.0.1", True), ("ipv4:127.9.9.9", True), ("ipv6:[::1]", True),
     ("unix:/tmp/s", True), ("ipv4:10.0.0.1", False), ("tenant-a", False)],
)  # fmt: skip
def test_loopback_callers(caller: str, loop: bool) -> None:
    assert is_loopback(caller) is loop


def test_requests_over_the_limit_get_retry_after() -> None:
    async def main() -> None:
        clock = FakeClock()
        lim = CallerLimits(
            RateLimitConfig(default=RateSpec(requests_per_s=4, requests_burst=2)),
            MemoryStore(clock=clock),
            clock=clock,
        )
        await lim.admit("a")
        await lim.admit("a")
        with pytest.raises(LimitExceeded) as ei:
            await lim.admit("a")
        assert ei.value.limit == "requests_per_s"
        assert ei.value.retry_after_s == pytest.approx(0.25)
        assert ("retry-after", "0.250") in ei.value.trailing_metadata()
        await lim.admit("b")  # others unaffected
        clock.t += 0.25
        await lim.admit("a")

    run(main())


def test_per_model_buckets_are_separate_from_the_default() -> None:
    async def main() -> None:
        lim = CallerLimits(
            RateLimitConfig(
                default=RateSpec(requests_per_s=0.001, requests_burst=1),
                models={"m2": RateSpec(requests_per_s=0.001, requests_burst=3)},
            ),
            MemoryStore(clock=FakeClock()),
        )
        assert await admitted(lim, "a", 5, "m1") == 1
        assert await admitted(lim, "a", 5, "other") == 0  # default bucket spans models
        assert await admitted(lim, "a", 5, "m2") == 3

    run(main())


def test_tokens_axis_input_must_fit_output_is_debited() -> None:
    async def main() -> None:
        clock = FakeClock()
        lim = CallerLimits(
            RateLimitConfig(default=RateSpec(tokens_per_s=100, tokens_burst=1000)),
            MemoryStore(clock=clock),
            clock=clock,
        )
        await lim.admit("a")  # no request axis: admitted
        await lim.charge_tokens("a", "m", 600)
        with pytest.raises(LimitExceeded) as ei:
            await lim.charge_tokens("a", "m", 600)
        assert ei.value.limit == "tokens_per_s" and ei.value.retry_after_s == pytest.approx(2.0)
        with pytest.raises(LimitExceeded, match="token burst is 1000"):
            await lim.charge_tokens("a", "m", 1001)
        await lim.charge_tokens("a", "m", 900, output=True)  # work done: taken anyway
        with pytest.raises(LimitExceeded) as ei:
            await lim.charge_tokens("a", "m", 1)
        assert ei.value.retry_after_s == pytest.approx(5.01)  # 400 - 900 = -500 -> 1 token
        await lim.charge_tokens("b", "m", 1000)

    run(main())


def test_quarantine_through_the_limiter() -> None:
    async def main() -> None:
        clock = FakeClock()
        store = MemoryStore(clock=clock)
        lim = CallerLimits(RateLimitConfig(), store, clock=clock)
        await lim.quarantine("a", 60)
        with pytest.raises(Quarantined) as ei:
            await lim.admit("a")
        assert ("retry-after", "60.000") in ei.value.trailing_metadata()
        await lim.admit("b")
        with_bucket = CallerLimits(
            RateLimitConfig(default=RateSpec(requests_per_s=1)), store, clock=clock
        )
        with pytest.raises(Quarantined):
            await with_bucket.admit("a")
        clock.t += 61
        await with_bucket.admit("a")

    run(main())


def test_store_down_fallback_grace_then_local_share_then_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        clock = FakeClock()
        store = FlakyStore(clock)
        states: list[bool] = []
        cfg = RateLimitConfig(
            default=RateSpec(requests_per_s=10, requests_burst=10),
            error_grace_s=2.0,
            replicas=2,
            retry_interval_s=0.5,
        )
        lim = CallerLimits(cfg, store, clock=clock, on_store_state=states.append)
        assert await admitted(lim, "a", 3) == 3
        store.down = True
        # Grace: fail closed, naming the store.
        with pytest.raises(LimitExceeded) as ei:
            await lim.admit("a")
        assert ei.value.limit == "ratelimit_store" and ei.value.retry_after_s == pytest.approx(2)
        assert states == [False]
        calls = store.calls
        clock.t += 1.0
        assert await admitted(lim, "b", 5) == 0
        assert store.calls == calls + 1  # retried once per retry_interval_s, not per call
        # After the grace: a local bucket at 1/2 of the rate (burst 5).
        clock.t += 1.5
        assert await admitted(lim, "b", 20) == 5
        clock.t += 1.0  # 10/2 = 5 tokens/s locally, and a retry is due (still down)
        assert await admitted(lim, "b", 20) == 5
        store.down = False
        clock.t += 0.5
        await lim.admit("c")  # the retry succeeds: back on the shared store
        assert lim.down_since is None and states == [False, True]
        assert await admitted(lim, "b", 20) == 10  # the shared bucket (burst 10)

    with caplog.at_level(logging.WARNING, logger="infershield.abuse.limiter"):
        run(main())
    text = caplog.text
    assert "unreachable" in text and "locally at 1/2" in text and "reachable again" in text


@pytest.mark.parametrize("mode", ["block", "allow"])
def test_store_down_block_and_allow_modes(mode: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        store = FlakyStore(clock)
        cfg = RateLimitConfig(
            default=RateSpec(requests_per_s=1, requests_burst=1),
            on_error=mode,  # type: ignore[arg-type]
            error_grace_s=0.0,
        )
        lim = CallerLimits(cfg, store, clock=clock)
        store.down = True
        clock.t += 100
        n = await admitted(lim, "a", 10)
        assert n == (10 if mode == "allow" else 0)

    run(main())


def test_quarantine_while_store_down_falls_back_locally() -> None:
    async def main() -> None:
        clock = FakeClock()
        store = FlakyStore(clock)
        lim = CallerLimits(
            RateLimitConfig(default=RateSpec(requests_per_s=100), error_grace_s=0.0),
            store,
            clock=clock,
        )
        store.down = True
        await lim.quarantine("a", 30)
        with pytest.raises(Quarantined):
            await lim.admit("a")

    run(main())


def test_output_debit_on_a_remote_store_runs_in_the_background() -> None:
    async def main() -> None:
        clock = FakeClock()
        store = FlakyStore(clock)
        lim = CallerLimits(
            RateLimitConfig(default=RateSpec(tokens_per_s=10, tokens_burst=100)),
            store,
            clock=clock,
        )
        await lim.charge_tokens("a", "m", 150, output=True)
        assert store.calls == 0  # not awaited by the call
        for _ in range(3):
            await asyncio.sleep(0)
        assert store.calls == 1
        assert not store.take_now("a|tok|*", Bucket(10, 100), 1).allowed  # in debt

    run(main())


def test_a_stream_watch_reads_a_remote_quarantine_at_most_once_a_second() -> None:
    """An open stream re-checks its caller's quarantine before each request: on the local
    store every time, on a remote one at most every REMOTE_RECHECK_S (a round trip per
    message would cost each streamed request a store call)."""
    from infershield.abuse.limiter import REMOTE_RECHECK_S

    class CountingStore(FlakyStore):
        async def quarantined_for(self, key: str) -> float:
            self.calls += 1
            return await super().quarantined_for(key)

    async def main() -> None:
        clock = FakeClock()
        store = CountingStore(clock)
        watch = CallerLimits(RateLimitConfig(), store, clock=clock).watch("c")
        await watch.check()  # admitted just now: no round trip yet
        assert store.calls == 0
        await store.quarantine("c", 60.0)
        clock.t += REMOTE_RECHECK_S / 2
        await watch.check()
        assert store.calls == 0
        clock.t += REMOTE_RECHECK_S / 2
        with pytest.raises(Quarantined):
            await watch.check()
        assert store.calls == 1

        local = MemoryStore(clock=clock)
        watch = CallerLimits(RateLimitConfig(), local, clock=clock).watch("c")
        await watch.check()
        await local.quarantine("c", 60.0)
        with pytest.raises(Quarantined):
            await watch.check()  # at once: a dictionary look-up costs nothing

    run(main())
