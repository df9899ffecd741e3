from collections.abc import Sequence

import pytest

from infershield.checks.base import Check, CheckContext
from infershield.pipeline import SKIPPED_FAIL_FAST, Pipeline, Step
from infershield.verdict import Decision, Status, Verdict


class Keyword(Check):
    """Blocks texts containing a keyword; counts how often it ran."""

    def __init__(self, name: str, word: str, score: float = 0.9) -> None:
        super().__init__(name)
        self.word = word
        self.score = score
        self.calls = 0

    def check(self, ctx: CheckContext) -> Verdict:
        self.calls += 1
        if self.word in ctx.text:
            return self.block(f"keyword {self.word}", self.score, categories=("injection",))
        return self.allow(score=0.1)


class Boom(Check):
    def check(self, ctx: CheckContext) -> Verdict:
        raise RuntimeError("model exploded: secret internals")


class Redactor(Check):
    def check(self, ctx: CheckContext) -> Verdict:
        if "4111" in ctx.text:
            return self.redact(
                "card", ctx.text.replace("4111", "[REDACTED:card]"), 0.7, categories=("pii",)
            )
        return self.allow()


class ShortBatch(Check):
    def check(self, ctx: CheckContext) -> Verdict:
        return self.allow()

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        return []


def test_any_block_blocks_and_score_is_max() -> None:
    p = Pipeline([Step(Keyword("a", "evil", 0.6)), Step(Keyword("b", "bad", 0.8))])
    r = p.run(CheckContext("evil and bad"))
    assert r.blocked
    assert r.score == pytest.approx(0.8)
    assert r.categories == ["injection"]
    assert [v.check for v in r.verdicts] == ["a", "b"]


def test_fail_fast_stops_early_without_changing_the_outcome() -> None:
    a, b = Keyword("a", "evil"), Keyword("b", "bad")
    slow = Pipeline([Step(a), Step(b)], fail_fast=False).run(CheckContext("evil"))
    fast_a, fast_b = Keyword("a", "evil"), Keyword("b", "bad")
    fast = Pipeline([Step(fast_a), Step(fast_b)], fail_fast=True).run(CheckContext("evil"))
    assert slow.decision == fast.decision == Decision.BLOCK
    assert fast_b.calls == 0 and b.calls == 1
    assert slow.score == fast.score


def test_fail_fast_reports_each_check_it_did_not_run_as_skipped() -> None:
    p = Pipeline([Step(Keyword("a", "evil")), Step(Keyword("b", "bad")),
                  Step(Keyword("c", "worse"))], fail_fast=True)
    r = p.run(CheckContext("evil bad"))
    assert [(v.check, v.status) for v in r.verdicts] == [
        ("a", Status.OK), ("b", Status.SKIPPED), ("c", Status.SKIPPED)]
    assert all(v.decision is Decision.ALLOW and v.score == 0.0 and v.reason == SKIPPED_FAIL_FAST
               for v in r.verdicts[1:])
    assert r.blocking_verdict is r.verdicts[0]
    # In a batch only the texts that already blocked skip; the others run every check.
    fine, evil = p.run_batch([CheckContext("fine"), CheckContext("evil")])
    assert [v.status for v in fine.verdicts] == [Status.OK] * 3
    assert [v.status for v in evil.verdicts] == [Status.OK, Status.SKIPPED, Status.SKIPPED]
    assert not any(v.status is Status.SKIPPED
                   for v in Pipeline(p.steps).run(CheckContext("evil bad")).verdicts)


@pytest.mark.parametrize(
    ("on_error", "decision"), [("block", Decision.BLOCK), ("allow", Decision.ALLOW)]
)
def test_a_crashing_check_follows_on_error(on_error: str, decision: Decision) -> None:
    p = Pipeline([Step(Boom("boom"), on_error)])  # type: ignore[arg-type]
    r = p.run(CheckContext("hello"))
    (v,) = r.verdicts
    assert v.status is Status.ERROR
    assert r.decision is decision
    assert "secret internals" not in v.reason  # never leak exception text


def test_default_on_error_is_block() -> None:
    assert Step(Boom("boom")).on_error == "block"
    assert Pipeline([Step(Boom("boom"))]).run(CheckContext("x")).blocked


def test_redact_rewrites_what_later_checks_see() -> None:
    seen: list[str] = []

    class Spy(Check):
        def __init__(self) -> None:
            super().__init__("spy")

        def check(self, ctx: CheckContext) -> Verdict:
            seen.append(ctx.text)
            return self.allow()

    r = Pipeline([Step(Redactor("r")), Step(Spy())]).run(CheckContext("card 4111 ok"))
    assert r.decision is Decision.REDACT
    assert r.text == "card [REDACTED:card] ok"
    assert seen == ["card [REDACTED:card] ok"]


def test_batch_matches_single_runs() -> None:
    texts = ["fine", "evil", "bad", "evil bad", ""]
    p = Pipeline([Step(Keyword("a", "evil")), Step(Keyword("b", "bad"))], fail_fast=True)
    batch = p.run_batch([CheckContext(t) for t in texts])
    single = [p.run(CheckContext(t)) for t in texts]
    assert [r.decision for r in batch] == [r.decision for r in single]
    assert [r.score for r in batch] == [r.score for r in single]


def test_a_check_returning_the_wrong_count_is_an_error_not_an_allow() -> None:
    p = Pipeline([Step(ShortBatch("short"))])
    results = p.run_batch([CheckContext("a"), CheckContext("b")])
    assert all(r.blocked for r in results)
    assert all(r.verdicts[0].status is Status.ERROR for r in results)


def test_elapsed_is_filled_in() -> None:
    r = Pipeline([Step(Keyword("a", "x"))]).run(CheckContext("y"))
    assert r.verdicts[0].elapsed_ms > 0
    assert r.to_dict()["blocked"] is False


def test_runs_inline_only_when_every_check_opts_in() -> None:
    class Cheap(Keyword):
        runs_inline = True

    assert Pipeline([Step(Cheap("a", "x"))]).runs_inline
    assert not Pipeline([Step(Cheap("a", "x")), Step(Keyword("b", "y"))]).runs_inline
    assert Pipeline([]).runs_inline
