"""Deadlines: a request's absolute deadline, narrowed per stage, and the per-check budget.

A request starts with :meth:`Deadline.effective` (the smaller of the client's gRPC deadline
and ``limits.deadline_s``); each stage narrows it. A pipeline run, in a worker thread, gets a
:class:`CheckBudget`. Overruns raise :class:`~infershield.errors.DeadlineExceeded` naming
the stage.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from infershield.errors import DeadlineExceeded

T = TypeVar("T")
#: A monotonic clock in seconds (injectable for tests).
Clock = Callable[[], float]


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
        # A plain flag, not a threading.Event: one is made per screened batch, and a worker
        # thread only needs to see the write, which the GIL orders.
        self._cancelled = False

    def cancel(self) -> None:
        """The caller is gone (or the stage timed out): run no further checks."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def before(self, check: str) -> None:
        if self._cancelled:
            raise DeadlineExceeded(
                f"request abandoned before check {check!r}", stage=f"check:{check}"
            )
        if self.deadline.expired:  # the stage name is built only when it is needed
            raise self.deadline.error(f"check:{check}")

    def after(self, check: str, elapsed_s: float) -> None:
        if self.per_check_s is not None and elapsed_s > self.per_check_s:
            raise DeadlineExceeded(
                f"check {check!r} took {elapsed_s:.3f}s; check_budget_s is {self.per_check_s:g}",
                stage=f"check:{check}",
            )
