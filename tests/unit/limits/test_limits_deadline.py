"""Deadlines: the effective deadline, stage budgets, and the per-check budget of a pipeline run."""

from __future__ import annotations

import asyncio
import time

import pytest

from clock_support import FakeClock
from infershield.checks.base import Check, CheckContext
from infershield.errors import DeadlineExceeded
from infershield.limits.deadline import CheckBudget, Deadline
from infershield.pipeline import Pipeline, Step
from infershield.verdict import Verdict


@pytest.mark.parametrize(
    ("policy_s", "client_s", "expected"),
    [(30.0, None, 30.0), (30.0, 2.0, 2.0), (1.0, 5.0, 1.0), (30.0, float("nan"), 30.0)],
)
def test_effective_deadline_is_the_smaller(
    policy_s: float, client_s: float | None, expected: float
) -> None:
    clock = FakeClock()
    d = Deadline.effective(policy_s, client_s, clock=clock)
    assert d.remaining() == pytest.approx(expected)


def test_stage_budget_never_outlives_the_request() -> None:
    clock = FakeClock()
    req = Deadline.after(1.0, clock=clock)
    assert req.budget("check:signatures", 0.2).remaining() == pytest.approx(0.2)
    assert req.budget("upstream", 30.0).remaining() == pytest.approx(1.0)
    clock.now += 2
    with pytest.raises(DeadlineExceeded) as ei:
        req.budget("upstream", 30.0).check()
    assert ei.value.stage == "upstream"


def test_deadline_run_cancels_overrunning_work() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> None:
        with pytest.raises(DeadlineExceeded) as ei:
            await Deadline.after(0.05).run(slow(), stage="upstream")
        assert ei.value.stage == "upstream"
        assert cancelled.is_set()
        assert await Deadline.after(1).run(asyncio.sleep(0, "done")) == "done"

    asyncio.run(main())


def test_nan_deadline_is_refused() -> None:
    with pytest.raises(ValueError):
        Deadline.after(float("nan"))


class _Sleepy(Check):
    """Allows after sleeping; counts its runs."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name)
        self.seconds = seconds
        self.runs = 0

    def check(self, ctx: CheckContext) -> Verdict:
        self.runs += 1
        time.sleep(self.seconds)
        return self.allow()


def test_check_over_its_budget_names_the_check() -> None:
    fast, slow, after = _Sleepy("fast", 0), _Sleepy("slow", 0.1), _Sleepy("after", 0)
    pipe = Pipeline([Step(fast), Step(slow), Step(after)])
    with pytest.raises(DeadlineExceeded) as ei:
        pipe.run_batch([CheckContext("x")], budget=CheckBudget(Deadline.after(10), 0.05))
    assert ei.value.stage == "check:slow"
    assert "check_budget_s" in ei.value.message
    assert after.runs == 0  # nothing runs after the overrun
    # Within budget, the same pipeline just runs.
    assert not pipe.run_batch([CheckContext("x")], budget=CheckBudget(Deadline.after(10), 1))[
        0
    ].blocked


def test_expired_or_abandoned_request_runs_no_further_checks() -> None:
    first, second = _Sleepy("first", 0.05), _Sleepy("second", 0)
    pipe = Pipeline([Step(first), Step(second)])
    with pytest.raises(DeadlineExceeded) as ei:
        pipe.run_batch([CheckContext("x")], budget=CheckBudget(Deadline.after(0.02)))
    assert ei.value.stage == "check:second"
    assert (first.runs, second.runs) == (1, 0)
    budget = CheckBudget(Deadline.after(10))
    budget.cancel()  # the caller went away
    with pytest.raises(DeadlineExceeded, match="abandoned"):
        pipe.run_batch([CheckContext("x")], budget=budget)
    assert first.runs == 1


def test_check_budget_must_be_positive() -> None:
    from infershield.config import Config, build, validate
    from infershield.errors import ConfigError

    with pytest.raises(ConfigError, match="check_budget_s"):
        # allow_empty: the empty-pipeline check would otherwise fire first.
        validate(build(Config, {"limits": {"check_budget_s": 0}, "policy": {"allow_empty": True}}))
