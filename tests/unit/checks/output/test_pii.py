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
        ("Tawagan 0917 123 4567 o 0532 123 45 67.",
         "Tawagan [REDACTED:phone] o [REDACTED:phone]."),
        ("電話は03-1234-5678です", "電話は[REDACTED:phone]です"),
        ("ssn 078.05.1123", "ssn [REDACTED:us_ssn]"),
        ("IBAN BY13-NBRB-3600-9000-0000-2Z00-AB00.", "IBAN [REDACTED:iban]."),
        ("Ottawa, ON K1A 0B1", "Ottawa, ON [REDACTED:postal_code]"),
        ("Mountain View, CA 94043", "Mountain View, CA [REDACTED:postal_code]"),
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
        "IBAN DE89 3704 0044 0532 0130 01",  # invalid IBAN, inner digits pass Luhn
        "bad 12345:db8::1 and 2001::25de::cade",
        "released 2024-01-15 10:30, version 10.0.19041.1",
        "order 4839201755 shipped",
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


def test_multi_item_text_is_fully_redacted(check: PiiCheck) -> None:
    text = ("Reach Ana at +1 (415) 555-0132 or ana@example.org; SSN 536-22-1234; card "
            "4111-1111-1111-1111; IBAN GB82 WEST 1234 5698 7654 32; from 203.0.113.9 and "
            "2001:db8::7; call 020 7946 0958 too.")
    v = check.check(CheckContext(text=text, stage="output"))
    out = v.rewritten or ""
    for value in ("(415) 555-0132", "ana@example.org", "536-22-1234", "4111-1111-1111-1111",
                  "GB82 WEST", "203.0.113.9", "2001:db8::7", "020 7946 0958"):
        assert value not in out, (value, out)
    assert dict(v.details) == {"credit_card": "1", "email": "1", "iban": "1", "ipv4": "1",
                               "ipv6": "1", "phone": "2", "us_ssn": "1"}
    assert text not in v.reason


def test_multibyte_offsets_are_exact(check: PiiCheck) -> None:
    text = "👩‍💻 Zoë → 📧 zoë.müller@exämple.de, ☎ +49 30 901820 — ÄÖÜ 4111 1111 1111 1111 ✓"
    v = check.check(CheckContext(text=text))
    assert v.rewritten == ("👩‍💻 Zoë → 📧 [REDACTED:email], ☎ [REDACTED:phone] — ÄÖÜ "
                           "[REDACTED:credit_card] ✓")
    for f in check.find(text):
        assert text[f.start : f.end].strip() == text[f.start : f.end]


def test_phone_regions_option() -> None:
    gb_only = PiiCheck("pii", PiiOptions(detectors=("phone",), phone_regions=("GB",)))
    assert gb_only.check(CheckContext(text="call 020 7946 0958")).decision is Decision.REDACT
    # A Chinese mobile in national format is a phone only where CN is a default region.
    assert gb_only.check(CheckContext(text="call 138 0013 8000")).decision is Decision.ALLOW
    with pytest.raises(ValueError, match="phone_regions"):
        PiiOptions(phone_regions=("XX",))


@pytest.mark.parametrize(
    "text",
    [
        "the year 2024 2025 2026",  # parses in DE, but not grouped as DE writes numbers
        "Order 123-456-7890",  # valid in GB only with its trunk 0 (01234 567890)
        "port 5432 6379 8080",
        "Chapter 10.2.3.1",
    ],
)
def test_number_runs_that_are_not_phones(check: PiiCheck, text: str) -> None:
    assert check.check(CheckContext(text=text)).decision is Decision.ALLOW


def test_us_layout_with_fictional_exchange_is_a_phone(check: PiiCheck) -> None:
    v = check.check(CheckContext(text="call 555-123-4567 or +1 (555) 123-4567"))
    assert v.rewritten == "call [REDACTED:phone] or [REDACTED:phone]"
