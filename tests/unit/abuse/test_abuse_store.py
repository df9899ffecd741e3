"""Token buckets behind one interface: the same table runs on memory and on a real Redis."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infershield.abuse.store import Bucket, MemoryStore, Store, Take, refill, take_tokens


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[FakeClock], Store]]:
    """A store factory per backend; the Redis one talks to a real redis-server."""
    if request.param == "memory":
        yield lambda clock: MemoryStore(clock=clock)
        return
    from infershield.abuse.redis_store import RedisStore

    server = request.getfixturevalue("redis_server")
    yield lambda clock: RedisStore(server.url, prefix="t", timeout_s=1.0, clock=clock)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_bucket_refills_and_refuses_with_retry_after(
    make_store: Callable[[FakeClock], Store],
) -> None:
    async def main() -> None:
        clock = FakeClock()
        store = make_store(clock)
        b = Bucket(rate=2.0, burst=3.0)
        try:
            got = [(await store.take("a", b, 1)).allowed for _ in range(4)]
            assert got == [True, True, True, False]
            refused = await store.take("a", b, 1)
            assert not refused.allowed and refused.retry_after_s == pytest.approx(0.5)
            assert (await store.take("other", b, 1)).allowed  # callers are independent
            clock.t += 0.5  # one token back
            assert (await store.take("a", b, 1)).allowed
            assert not (await store.take("a", b, 1)).allowed
            clock.t += 100  # never more than the burst
            assert [(await store.take("a", b, 1)).allowed for _ in range(4)] == [
                True, True, True, False,
            ]  # fmt: skip
        finally:
            await store.close()

    run(main())


def test_forced_take_goes_into_debt_bounded_by_burst(
    make_store: Callable[[FakeClock], Store],
) -> None:
    async def main() -> None:
        clock = FakeClock()
        store = make_store(clock)
        b = Bucket(rate=10.0, burst=100.0)
        try:
            res = await store.take("a", b, 250, force=True)
            assert res.allowed and res.tokens == pytest.approx(-100)  # capped at -burst
            refused = await store.take("a", b, 1)
            assert not refused.allowed and refused.retry_after_s == pytest.approx(10.1)
            clock.t += 10.1
            assert (await store.take("a", b, 1)).allowed
        finally:
            await store.close()

    run(main())


def test_quarantine_refuses_before_taking(make_store: Callable[[FakeClock], Store]) -> None:
    async def main() -> None:
        clock = FakeClock()
        store = make_store(clock)
        b = Bucket(rate=1.0, burst=1.0)
        try:
            assert await store.quarantined_for("bad") == 0
            await store.quarantine("bad", 30)
            left = await store.quarantined_for("bad")
            assert 29 < left <= 30
            res = await store.take("bad|req", b, 1, quarantine_key="bad")
            assert not res.allowed and 29 < res.quarantined_s <= 30
            # Nothing was taken: without the quarantine check the token is still there.
            assert (await store.take("bad|req", b, 1)).allowed
            assert (await store.take("good|req", b, 1, quarantine_key="good")).allowed
        finally:
            await store.close()

    run(main())


def test_memory_quarantine_expires_on_the_clock() -> None:
    async def main() -> None:
        clock = FakeClock()
        store = MemoryStore(clock=clock)
        await store.quarantine("x", 5)
        clock.t += 4.9
        assert await store.quarantined_for("x") == pytest.approx(0.1)
        clock.t += 0.2
        assert await store.quarantined_for("x") == 0

    run(main())


def test_memory_store_is_bounded() -> None:
    store = MemoryStore(max_keys=3, clock=FakeClock())
    for i in range(10):
        store.take_now(f"k{i}", Bucket(1, 1), 1)
    assert len(store) == 3


def test_clock_going_backwards_adds_no_tokens() -> None:
    b = Bucket(rate=1.0, burst=5.0)
    assert refill(2.0, last=10.0, now=5.0, bucket=b) == 2.0
    assert take_tokens(0.5, 1.0, b, force=False) == Take(False, 0.5, 0.5)


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (1, 0), (-1, 1), (math.inf, 1), (math.nan, 1), (1, math.nan)]
)
def test_bucket_rejects_bad_numbers(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        Bucket(rate, burst)


def test_scaled_bucket_is_a_replica_share() -> None:
    assert Bucket(30.0, 60.0).scaled(3) == Bucket(10.0, 20.0)
    assert Bucket(1.0, 1.0).scaled(4) == Bucket(0.25, 1.0)  # never below one token


def test_redis_store_unreachable_raises_store_unavailable() -> None:
    from firewall_support import free_port
    from infershield.abuse.redis_store import RedisStore
    from infershield.abuse.store import StoreUnavailable

    async def main() -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
        try:
            with pytest.raises(StoreUnavailable):
                await store.take("a", Bucket(1, 1), 1)
            with pytest.raises(StoreUnavailable):
                await store.quarantine("a", 1)
        finally:
            await store.close()

    run(main())


def test_redis_uses_its_own_clock_by_default(redis_server: Any) -> None:
    """Without an injected clock, refill follows Redis' TIME (replicas may disagree on time)."""
    from infershield.abuse.redis_store import RedisStore

    async def main() -> None:
        store = RedisStore(redis_server.url, timeout_s=1.0)
        b = Bucket(rate=20.0, burst=1.0)
        try:
            assert (await store.take("a", b, 1)).allowed
            assert not (await store.take("a", b, 1)).allowed
            await asyncio.sleep(0.08)
            assert (await store.take("a", b, 1)).allowed
        finally:
            await store.close()

    run(main())
