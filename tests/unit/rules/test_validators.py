"""Checksum and range validators for PII candidates."""

from __future__ import annotations

import pytest

from infershield.rules.validators import iban, ipv4, ipv6, jwt, luhn, phone, us_ssn


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1112", False),
        ("378282246310005", True),
        ("5555555555555555", False),  # one repeated digit: not a card
        ("4111", False),
        ("6011111111111117", True),
    ],
)
def test_luhn(value: str, ok: bool) -> None:
    assert luhn(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("DE89 3704 0044 0532 0130 00", True),
        ("DE89 3704 0044 0532 0130 01", False),
        ("GB82WEST12345698765432", True),
        ("GB82WEST1234569876543", False),  # wrong length for GB
        ("ZZ12 3456 7890 1234", False),
    ],
)
def test_iban(value: str, ok: bool) -> None:
    assert iban(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [("536-22-1234", True), ("000-12-3456", False), ("666-12-3456", False),
     ("912-12-3456", False), ("536-00-1234", False), ("536-22-0000", False),
     ("078-05-1120", False)],
)
def test_us_ssn(value: str, ok: bool) -> None:
    assert us_ssn(value) is ok


def test_ip_and_phone_and_jwt() -> None:
    assert ipv4("203.0.113.42") and not ipv4("256.1.1.1") and not ipv4("01.2.3.4")
    assert ipv6("2001:db8::1") and not ipv6("12:30:45") and not ipv6("::1")
    assert phone("+44 20 7946 0958") and not phone("+3 2")
    token = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
             "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")
    assert jwt(token) and not jwt("eyJub3QiOiJqd3QifQ.eyJhIjoxfQ.abc")


def test_every_named_validator_exists() -> None:
    from infershield.rules.packs import VALIDATORS
    from infershield.rules.validators import REGION_VALIDATORS, VALIDATOR_FUNCS

    assert set(VALIDATORS) == set(VALIDATOR_FUNCS) | set(REGION_VALIDATORS)


def test_github_crc_tail_and_placeholders() -> None:
    from infershield.rules.validators import github_crc, placeholder, token

    assert github_crc("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")
    assert not github_crc("ghp_M1eWrP3uIZ35wyVpbDO0tdDFPu2OOj3aOfPd")
    for value in ("insert_key_here", "a-fake-api-key", "somefakekey", "<your-key>", "${VAR}",
                  "changeme", "xxxxxxxx", "AKIAIOSFODNN7EXAMPLE", "{{ secret }}"):
        assert placeholder(value), value
    assert not placeholder("m{{h}o)p${e]nob(ody[finds>-_$#thisone}")
    assert token("AKIAHJGONJRJUPPXDL3R") and not token("AKIAAAAAAAAAAAAAAAAA")


@pytest.mark.parametrize(
    ("value", "quoted", "ok"),
    [("S3cure!Passw0rd#2024", True, True), ("hunter2", True, True),
     ("Xr4tLw9qZ2m", False, True), ("bert-base-uncased", False, False),
     ("os.environ", False, False), ("4096", False, False), ("key-value", True, False),
     ("Please enter a password", True, False), ("p@ss word 123", True, True)],
)
def test_credential_value(value: str, quoted: bool, ok: bool) -> None:
    from infershield.rules.validators import credential_value

    assert credential_value(value, quoted=quoted) is ok


def test_email_shape() -> None:
    from infershield.rules.validators import email

    assert email("jane.doe@mail.example.org")
    assert not email("john..doe@example.com") and not email("jane@-example.com")
