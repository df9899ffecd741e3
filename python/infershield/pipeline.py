"""Runs checks in order and folds their verdicts into one result."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from infershield.checks.base import Check, CheckContext
from infershield.telemetry.instrument import check_span, record_check, record_stage
from infershield.verdict import Decision, Status, Verdict

if TYPE_CHECKING:
    from infershield.limits.deadline import CheckBudget

log = logging.getLogger(__name__)
OnError = Literal["block", "allow"]
#: Reason of the SKIPPED verdict of a check that did not run because an earlier one blocked.
SKIPPED_FAIL_FAST = "not run: an earlier check blocked (fail_fast)"


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The folded outcome: any BLOCK blocks; the score is the maximum over checks."""

    decision: Decision
    score: float
    verdicts: tuple[Verdict, ...]
    text: str  # the text after any REDACT rewrites
    elapsed_ms: float

    @property
    def blocked(self) -> bool:
        return self.decision is Decision.BLOCK

    @property
    def categories(self) -> list[str]:
        seen: dict[str, None] = {}
        for v in self.verdicts:
            if v.decision is not Decision.ALLOW:
                for c in v.categories:
                    seen.setdefault(c, None)
        return list(seen)

    @property
    def blocking_verdict(self) -> Verdict | None:
        for v in self.verdicts:
            if v.decision is Decision.BLOCK:
                return v
        return None

    def to_dict(self) -> dict[str, object]:
        return {
            "blocked": self.blocked,
            "decision": self.decision.value,
            "score": round(self.score, 6),
            "categories": self.categories,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "elapsed_ms": round(self.elapsed_ms, 4),
        }


@dataclass(frozen=True, slots=True)
class Step:
    """A check placed in a pipeline, with what to do when the check itself fails."""

    check: Check
    on_error: OnError = "block"


class Pipeline:
    """Runs its steps in order over one text or a batch.

    A REDACT rewrites the text that later steps see. ``fail_fast`` stops at the first BLOCK;
    it saves work but never changes the outcome (one BLOCK already decides it); each check
    it did not run still reports a verdict, with status SKIPPED.
    A check that raises yields a Verdict with status ERROR and the step's ``on_error``
    decision: blocking by default, so a crash never lets a request through by accident.
    """

    def __init__(self, steps: Sequence[Step], *, fail_fast: bool = False) -> None:
        self.steps = tuple(steps)
        self.fail_fast = fail_fast
        self._inline = all(s.check.runs_inline for s in self.steps)

    @property
    def runs_inline(self) -> bool:
        """True when every check is cheap enough to run on an event loop for small texts."""
        return self._inline

    @property
    def checks(self) -> tuple[Check, ...]:
        return tuple(s.check for s in self.steps)

    def run(self, ctx: CheckContext) -> PipelineResult:
        return self.run_batch([ctx])[0]

    def run_batch(
        self, ctxs: Sequence[CheckContext], *, budget: CheckBudget | None = None
    ) -> list[PipelineResult]:
        """Run every check over ``ctxs``. With a ``budget``, raise DeadlineExceeded (naming
        the check) when the request's deadline passes or a check overruns its budget."""
        t0 = time.perf_counter()
        verdicts: list[list[Verdict]] = [[] for _ in ctxs]
        done = [False] * len(ctxs)
        for step in self.steps:
            live = [i for i in range(len(ctxs)) if not done[i]]
            if len(live) < len(ctxs):
                skipped = self._skipped_verdict(step)
                for i in range(len(ctxs)):
                    if done[i]:
                        verdicts[i].append(skipped)
            if not live:
                continue
            batch = [ctxs[i] for i in live]
            name = step.check.name
            if budget is not None:
                budget.before(name)
            step_verdicts, seconds = self._run_step(step, batch)
            if budget is not None:
                budget.after(name, seconds)
            for i, v in zip(live, step_verdicts, strict=True):
                verdicts[i].append(v)
                if v.decision is Decision.REDACT and v.rewritten is not None:
                    ctxs[i].text = v.rewritten
                    ctxs[i].memo.clear()
                if v.decision is Decision.BLOCK and self.fail_fast:
                    done[i] = True
        elapsed = (time.perf_counter() - t0) * 1000.0
        results = [_fold(vs, ctx.text, elapsed) for vs, ctx in zip(verdicts, ctxs, strict=True)]
        record_stage(ctxs, results, elapsed / 1000.0)
        return results

    def _run_step(self, step: Step, batch: list[CheckContext]) -> tuple[list[Verdict], float]:
        """One check over a batch: its verdicts and the seconds it took."""
        # One span per check per batch (attributes aggregated; see telemetry.instrument).
        stage = batch[0].stage
        with check_span(step.check.name, stage, len(batch)) as span:
            out, seconds = self._run_step_untraced(step, batch)
            record_check(span, step.check.name, stage, out, seconds)
        return out, seconds

    def _run_step_untraced(
        self, step: Step, batch: list[CheckContext]
    ) -> tuple[list[Verdict], float]:
        t0 = time.perf_counter()
        try:
            out = step.check.check_batch(batch) if len(batch) > 1 else [step.check.check(batch[0])]
            if len(out) != len(batch):
                raise RuntimeError(
                    f"{step.check.name} returned {len(out)} verdicts for {len(batch)}"
                )
        except Exception as exc:  # a failing check must never pass silently
            log.warning("check %s failed: %s", step.check.name, type(exc).__name__, exc_info=True)
            return [self._error_verdict(step, exc) for _ in batch], time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        per_item = seconds * 1000.0 / max(len(batch), 1)
        return [v if v.elapsed_ms else _timed(v, per_item) for v in out], seconds

    @staticmethod
    def _skipped_verdict(step: Step) -> Verdict:
        """What a text gets for a check that ``fail_fast`` did not run: reported, not hidden."""
        return Verdict(step.check.name, Decision.ALLOW, Status.SKIPPED, 0.0, SKIPPED_FAIL_FAST)

    @staticmethod
    def _error_verdict(step: Step, exc: Exception) -> Verdict:
        decision = Decision.BLOCK if step.on_error == "block" else Decision.ALLOW
        return Verdict(
            step.check.name,
            decision,
            Status.ERROR,
            1.0 if decision is Decision.BLOCK else 0.0,
            f"check failed ({type(exc).__name__}); on_error={step.on_error}",
        )

    def close(self) -> None:
        for s in self.steps:
            s.check.close()


def _timed(v: Verdict, elapsed_ms: float) -> Verdict:
    """``v`` with its ``elapsed_ms`` (built directly: ``dataclasses.replace`` costs several
    times more, once per check per text)."""
    return Verdict(
        v.check, v.decision, v.status, v.score, v.reason, v.categories, v.rewritten,
        elapsed_ms, v.details,
    )


def _fold(verdicts: list[Verdict], text: str, elapsed_ms: float) -> PipelineResult:
    decision = Decision.ALLOW
    for v in verdicts:
        if v.decision is Decision.BLOCK:
            decision = Decision.BLOCK
            break
        if v.decision is Decision.REDACT:
            decision = Decision.REDACT
    score = max((v.score for v in verdicts), default=0.0)
    return PipelineResult(decision, score, tuple(verdicts), text, elapsed_ms)
