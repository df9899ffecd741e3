"""Load shedding: slots, the bounded queue, retry-after."""

from __future__ import annotations

import asyncio

import pytest

from infershield.config import LimitsConfig
from infershield.errors import DeadlineExceeded, LimitExceeded
from infershield.limits.concurrency import ConcurrencyLimiter
from infershield.limits.deadline import Deadline


def test_limiter_runs_n_queues_m_and_sheds_the_rest() -> None:
    async def main() -> None:
        lim = ConcurrencyLimiter(2, 3)
        gate = asyncio.Event()
        running = 0
        peak = 0

        async def request() -> str:
            nonlocal running, peak
            async with lim.slot():
                running += 1
                peak = max(peak, running)
                await gate.wait()
                running -= 1
                return "ok"

        tasks = [asyncio.create_task(request()) for _ in range(10)]
        await asyncio.sleep(0.01)
        assert (lim.active, lim.queued) == (2, 3)
        shed = [t for t in tasks if t.done()]
        assert len(shed) == 5  # rejected at once, without waiting for a slot
        for t in shed:
            exc = t.exception()
            assert isinstance(exc, LimitExceeded) and exc.limit == "max_queue"
        gate.set()
        results = [await t for t in tasks if t not in shed]
        assert results == ["ok"] * 5
        assert peak == 2
        assert (lim.active, lim.queued, lim.shed) == (0, 0, 5)

    asyncio.run(main())


def test_queued_request_times_out_or_cancels_without_leaking_a_slot() -> None:
    async def main() -> None:
        lim = ConcurrencyLimiter(1, 5)
        await lim.acquire()
        with pytest.raises(DeadlineExceeded) as ei:
            await lim.acquire(Deadline.after(0.02))
        assert ei.value.stage == "queue"
        waiter = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert lim.queued == 0
        # A slot handed over at the moment the waiter gives up is passed on, not lost.
        w2 = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0)
        lim.release()  # hands the slot to w2 ...
        w2.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await w2
        assert lim.active == 0
        await asyncio.wait_for(lim.acquire(), 0.1)
        assert lim.active == 1

    asyncio.run(main())


def test_shed_says_when_to_retry() -> None:
    async def main() -> None:
        lim = ConcurrencyLimiter(2, 2)
        for _ in range(4):  # each request held its slot for ~20 ms
            async with lim.slot():
                await asyncio.sleep(0.02)
        assert 0.0 < lim.hold_s < 0.1
        gate = asyncio.Event()

        async def hold() -> None:
            async with lim.slot():
                await gate.wait()

        tasks = [asyncio.create_task(hold()) for _ in range(4)]
        await asyncio.sleep(0.01)
        with pytest.raises(LimitExceeded) as ei:
            await lim.acquire()
        # Two rounds ahead (2 queued + 2 running, 2 at a time), each ~hold_s long.
        assert ei.value.retry_after_s == pytest.approx(2 * lim.hold_s)
        assert dict(ei.value.trailing_metadata()) == {
            "infershield-limit": "max_queue",
            "retry-after": f"{2 * lim.hold_s:.3f}",
        }
        gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_limiter_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        ConcurrencyLimiter(0, 1)
    assert ConcurrencyLimiter.from_limits(LimitsConfig()).max_queue == LimitsConfig().max_queue
