"""The ``secrets`` check: key formats, PEM blocks, JWTs, overlap resolution."""

from __future__ import annotations

import pytest

from infershield.checks.base import CheckContext
from infershield.checks.output.secrets import SecretsCheck, SecretsOptions
from infershield.verdict import Decision

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
       "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")


@pytest.fixture(scope="module")
def check() -> SecretsCheck:
    return SecretsCheck("secrets")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("id AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_key"),
        ("key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "gcp_api_key"),
        ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "github_token"),
        ("xoxb-2934857162-3948571629384-aBcDeFgHiJkLmNoPqRsTuVwX", "slack_token"),
        ("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0h", "openai_key"),
        ("sk-ant-api03-abcDEF1234567890abcDEF1234567890abcDEF12-XYZ", "anthropic_key"),
        ('api_key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"', "stripe_key"),
        (f"Bearer {JWT}", "jwt"),
    ],
)
def test_finds_and_redacts(check: SecretsCheck, text: str, kind: str) -> None:
    v = check.check(CheckContext(text=text, stage="output"))
    assert v.decision is Decision.REDACT
    assert f"[REDACTED:{kind}]" in (v.rewritten or "")
    assert "secret" in v.categories


def test_private_key_block_redacted_to_end_line(check: SecretsCheck) -> None:
    text = ("before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n"
            "-----END RSA PRIVATE KEY-----\nafter")
    v = check.check(CheckContext(text=text))
    assert v.rewritten == "before\n[REDACTED:private_key]\nafter"


def test_private_key_without_end_fails_closed(check: SecretsCheck) -> None:
    v = check.check(CheckContext(text='{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIE'))
    assert v.rewritten == '{"private_key": "[REDACTED:private_key]'


@pytest.mark.parametrize(
    "text",
    ["AKIA is how AWS keys start", "pip install scikit-learn", "use hf_hub_download",
     "password = input('Password: ')", "-----BEGIN PUBLIC KEY-----"],
)
def test_negatives(check: SecretsCheck, text: str) -> None:
    assert check.check(CheckContext(text=text)).decision is Decision.ALLOW


def test_block_action() -> None:
    chk = SecretsCheck("secrets", SecretsOptions(action="block"))
    v = chk.check(CheckContext(text="token ghp_16C7e42F292c6912E7710c838347Ae178B4a"))
    assert v.decision is Decision.BLOCK and v.reason == "secret found: github_token"
