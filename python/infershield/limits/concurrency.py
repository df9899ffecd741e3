"""Load shedding: a bounded number of running requests and a bounded FIFO queue.

The asyncio objects here belong to the event loop that first uses them (the server's loop);
they are not thread-safe, by design: the server runs one loop.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from infershield.errors import DeadlineExceeded, LimitExceeded
from infershield.limits.deadline import Deadline

if TYPE_CHECKING:
    from infershield.config import LimitsConfig


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
