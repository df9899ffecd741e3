import pytest

from infershield.verdict import Decision, Status, Verdict


def test_verdict_keeps_decision_apart_from_status() -> None:
    v = Verdict("x", Decision.BLOCK, Status.ERROR, 1.0, "check failed")
    assert v.blocked
    assert v.to_dict()["status"] == "error"
    assert v.to_dict()["decision"] == "block"


@pytest.mark.parametrize("score", [-0.1, 1.01, float("nan")])
def test_score_outside_unit_interval_is_rejected(score: float) -> None:
    with pytest.raises(ValueError, match="score"):
        Verdict("x", Decision.ALLOW, score=score)


def test_redact_needs_rewritten_text() -> None:
    with pytest.raises(ValueError, match="rewritten"):
        Verdict("x", Decision.REDACT, score=1.0)
    v = Verdict("x", Decision.REDACT, score=1.0, rewritten="[REDACTED]")
    assert v.to_dict()["rewritten"] == "[REDACTED]"
