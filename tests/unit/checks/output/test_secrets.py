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
        ("id AKIAHJGONJRJUPPXDL3R", "aws_access_key"),
        ("id A3T3HP2HGHWI5ANPEGXV", "aws_access_key"),
        ("aws_secret_access_key = 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", "aws_secret_key"),
        ("key=AIza_ILnbZHLMfZNBYQRPHBvtw2O5eAojW2uUEn", "gcp_api_key"),
        ("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", "github_token"),
        ("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", "npm_token"),
        ("glpat-OVQMQT948pt2h91AoliU", "gitlab_token"),
        ("xoxb-55918241862-5212883427583-9rlPnVHihvAEWuCPNjC3tGDy", "slack_token"),
        ("xoxp-63134440426-73557248994-6149806352087-3447c7e036a887d4d2c6af04d2d09cea",
         "slack_token"),
        ("xoxo-85677248942-LYYOo7uaDhg4n1wvE5tRnJI9", "slack_token"),
        ("NTcxNjMzMjQyNDgyNzMyMjc2.L_p0Kd.CrlW_Kx5BoZCyd_BjnroeGoNZzj", "discord_token"),
        ("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", "sendgrid_key"),
        ("239745856a143af6fe397e005f15b894-us14", "mailchimp_key"),
        ("bot7394021856:AAViMrm-7HAeAD4B6Cy-FDd2x9KAL02Ia9-/getMe", "telegram_bot_token"),
        ("sq0atp-0XYhBmiq09wX5qITb4NFOq", "square_token"),
        ("sk-proj-q4QAadNT6MCpqbjq4xYMiKjwHvfln1x-Np34hcDpJUUCVK9PwIX", "openai_key"),
        ("sk-ant-api03-3x9mKaPum_VrVPBGnQhPmyMWiFx8nMYkr4NJSDrssD8CcGNpTW8q7nLv4", "anthropic_key"),
        ('api_key = "sk_live_197qO8HdaKXGDfvXWxxABpA7"', "stripe_key"),
        ("dop_v1_a530cc86d46d6b4d3cbbba2668b6669fc2d88a5587a53ac25dcae3157a4ae380",
         "digitalocean_token"),
        ("dapib24d4be22b1521388fd01e7c2097429f", "databricks_token"),
        (f"Bearer {JWT}", "jwt"),
        ("t=eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJvd25lciJ9.",
         "jwt"),
        ("postgres://app:Vx9q!Rk4t7Yb@db.internal:5432/prod", "url_credentials"),
        ('DB_PASSWORD := "Qm7!vR2#kLp9"', "credential"),
    ],
)
def test_finds_and_redacts(check: SecretsCheck, text: str, kind: str) -> None:
    v = check.check(CheckContext(text=text, stage="output"))
    assert v.decision is Decision.REDACT
    assert f"[REDACTED:{kind}]" in (v.rewritten or ""), v.rewritten
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
     "password = input('Password: ')", "-----BEGIN PUBLIC KEY-----",
     "AKIAIOSFODNN7EXAMPLE",  # the documentation's placeholder
     "ghp_VS5hBgtEzCyUlb1bjKbdWZrmhEu4Dg2vUNXQ",  # CRC32 tail does not match
     "GITHUB_TOKEN=ghp_VS5hBgtEzCyUlb1bjKbdWZrmhEu4Dg2vUNXQ",
     'api_key = "insert_key_here"', 'API_KEY: "a-fake-api-key"', 'secret = "somefakekey"',
     "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----"],
)
def test_negatives(check: SecretsCheck, text: str) -> None:
    assert check.check(CheckContext(text=text)).decision is Decision.ALLOW


def test_block_action() -> None:
    chk = SecretsCheck("secrets", SecretsOptions(action="block"))
    v = chk.check(CheckContext(text="token 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"))
    assert v.decision is Decision.BLOCK and v.reason == "secret found: github_token"


def test_credential_value_only_is_redacted(check: SecretsCheck) -> None:
    v = check.check(CheckContext(text='if (password == "Tr0ub4dor&3") { ok(); }'))
    assert v.rewritten == 'if (password == "[REDACTED:credential]") { ok(); }'


def test_stripe_key_under_a_credential_name_is_the_stripe_key(check: SecretsCheck) -> None:
    v = check.check(CheckContext(text='api_key = "sk_live_197qO8HdaKXGDfvXWxxABpA7"'))
    assert v.rewritten == 'api_key = "[REDACTED:stripe_key]"'


def test_hash_mode_is_stable_and_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERSHIELD_REDACTION_KEY", "k" * 32)
    chk = SecretsCheck("secrets", SecretsOptions(mode="hash"))
    text = "a 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 b 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"
    out = chk.check(CheckContext(text=text)).rewritten or ""
    first, second = out.split()[1], out.split()[3]
    assert first == second and first.startswith("[GITHUB_TOKEN:") and "ghp_" not in out
    monkeypatch.setenv("INFERSHIELD_REDACTION_KEY", "j" * 32)
    other = SecretsCheck("secrets", SecretsOptions(mode="hash"))
    assert other.check(CheckContext(text=text)).rewritten != out


def test_hash_mode_without_key_is_an_option_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERSHIELD_REDACTION_KEY", raising=False)
    with pytest.raises(ValueError, match="hash_key_env"):
        SecretsCheck("secrets", SecretsOptions(mode="hash"))
