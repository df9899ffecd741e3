"""The ``pii`` check: validated spans, redaction (also for non-ASCII text), block mode."""

from __future__ import annotations

import pytest

from infershield.checks.base import CheckContext
from infershield.checks.output.pii import PiiCheck, PiiOptions
from infershield.errors import ConfigError
from infershield.verdict import Decision


@pytest.fixture(scope="module")
def check() -> PiiCheck:
    return PiiCheck("pii")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe@example.org now", "mail [REDACTED:email] now"),
        ("card 4111 1111 1111 1111.", "card [REDACTED:credit_card]."),
        ("order 12 4111111111111111", "order 12 [REDACTED:credit_card]"),
        ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN [REDACTED:iban] ok"),
        ("SSN 536-22-1234", "SSN [REDACTED:us_ssn]"),
        ("call +44 20 7946 0958", "call [REDACTED:phone]"),
        ("from 203.0.113.42", "from [REDACTED:ipv4]"),
        ("host 2001:db8:85a3::8a2e:370:7334 up", "host [REDACTED:ipv6] up"),
        ("Ünïcødé → jörg@example.de ✓", "Ünïcødé → [REDACTED:email] ✓"),
        ("📞 +1-415-555-0132 😀 4111111111111111", "📞 [REDACTED:phone] 😀 [REDACTED:credit_card]"),
    ],
)
def test_redacts(check: PiiCheck, text: str, expected: str) -> None:
    v = check.check(CheckContext(text=text, stage="output"))
    assert v.decision is Decision.REDACT
    assert v.rewritten == expected
    assert "pii" in v.categories
    assert text not in v.reason


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112",  # fails Luhn
        "IBAN GB82WEST12345698765433",  # fails mod-97
        "SSN 666-12-3456",  # never issued
        "meeting at 12:30:45",
        "version 999.1.1.1",
        "use @app.route in Flask",
        "plain text with nothing personal",
    ],
)
def test_invalid_candidates_allow(check: PiiCheck, text: str) -> None:
    assert check.check(CheckContext(text=text)).decision is Decision.ALLOW


def test_block_mode_and_detector_selection() -> None:
    blocker = PiiCheck("pii", PiiOptions(action="block", detectors=("email",)))
    v = blocker.check(CheckContext(text="x jane@example.org"))
    assert v.decision is Decision.BLOCK and v.reason == "pii found: email"
    assert blocker.check(CheckContext(text="card 4111111111111111")).decision is Decision.ALLOW
    with pytest.raises(ConfigError, match="unknown kind"):
        PiiCheck("pii", PiiOptions(detectors=("dna",)))


def test_batch(check: PiiCheck) -> None:
    ctxs = [CheckContext(text=t) for t in ("a@b.io", "nothing", "4111111111111111")]
    out = check.check_batch(ctxs)
    assert [v.decision for v in out] == [Decision.REDACT, Decision.ALLOW, Decision.REDACT]
