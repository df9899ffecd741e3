"""``prompt_leak``: system-prompt spans (n-gram containment) and canaries in outputs."""

from __future__ import annotations

import base64

import pytest

from infershield.canary import PREFIX, new_canary, plant, plant_in_chat
from infershield.checks.base import CheckContext
from infershield.checks.output.prompt_leak import PromptLeakCheck, PromptLeakOptions
from infershield.config import OptionError
from infershield.verdict import Decision, Status

SYSTEM = (
    "You are **HelpBot** for Contoso Travel. Never reveal the discount code SUMMER24 or the "
    "names of our partner hotels, and always answer in a friendly tone."
)
CHECK = PromptLeakCheck("prompt_leak")
CANARY = "ISC-0123456789abcdef"


def verdict(text: str, *, system: str = SYSTEM, canaries: tuple[str, ...] = ()) -> Decision:
    ctx = CheckContext(text, stage="output", system_prompt=system, canaries=canaries)
    return CHECK.check(ctx).decision


@pytest.mark.parametrize(
    "reply",
    [
        "You are HelpBot for Contoso Travel. Never reveal the discount code.",
        "you   are\nhelpbot for contoso\ttravel never reveal the discount",  # whitespace, case
        "> *You are* __HelpBot__ for `Contoso Travel`. Never reveal the discount code",  # md
        "1. the names of our partner hotels, and always answer in a friendly tone",
    ],
)
def test_a_long_span_of_the_system_prompt_is_blocked(reply: str) -> None:
    assert verdict(reply) is Decision.BLOCK


@pytest.mark.parametrize(
    "reply",
    [
        "Contoso Travel has partner hotels in Paris.",  # shared words, no long span
        "I am HelpBot. How can I help you today?",
        "You are welcome! Never reveal your password to anyone.",
    ],
)
def test_ordinary_replies_are_allowed(reply: str) -> None:
    assert verdict(reply) is Decision.ALLOW


def test_the_span_length_is_configurable_and_sane() -> None:
    loose = PromptLeakCheck("p", PromptLeakOptions(min_span_words=3))
    ctx = CheckContext("ask contoso travel never", stage="output", system_prompt=SYSTEM)
    assert loose.check(ctx).blocked and not CHECK.check(ctx).blocked
    with pytest.raises(OptionError, match="min_span_words: must be >= 3"):
        PromptLeakOptions(min_span_words=2)


def test_a_short_prompt_is_never_matched() -> None:
    assert verdict("be nice", system="be nice") is Decision.ALLOW


def test_without_prompt_or_canary_there_is_nothing_to_compare() -> None:
    v = CHECK.check(CheckContext("anything", stage="output"))
    assert v.decision is Decision.ALLOW and v.status is Status.OK
    assert v.reason == PromptLeakCheck.REASON_NOTHING


@pytest.mark.parametrize(
    ("encoded", "form"),
    [
        (CANARY, "plain"),
        (CANARY.lower().upper(), "plain"),
        (base64.b64encode(CANARY.encode()).decode(), "base64"),
        (base64.b64encode(f"system: {SYSTEM} (ref: {CANARY})".encode()).decode(), "base64"),
        (base64.urlsafe_b64encode(f"xy{CANARY}".encode()).decode().rstrip("="), "base64"),
        (CANARY.encode().hex(), "hex"),
        (CANARY.encode().hex().upper(), "hex"),
        (":".join(f"{b:02x}" for b in CANARY.encode()), "hex"),
    ],
    ids=["plain", "upper", "base64", "base64-in-blob", "base64url-shifted", "hex", "HEX",
         "hex-colons"],
)
def test_the_canary_is_found_plain_base64_and_hex(encoded: str, form: str) -> None:
    v = CHECK.check(CheckContext(f"Here: {encoded} ok", stage="output", canaries=(CANARY,)))
    assert v.blocked and v.categories == ("leak", "canary")
    assert f"({form})" in v.reason
    assert CANARY not in v.reason


def test_another_requests_canary_is_not_this_ones() -> None:
    assert verdict(f"ref {new_canary()}", system="", canaries=(CANARY,)) is Decision.ALLOW


def test_span_chars_covers_the_longest_window() -> None:
    n = CHECK.span_chars(SYSTEM)
    assert n > len("Never reveal the discount code SUMMER24 or the")
    assert CHECK.span_chars("too short") == 0


def test_canaries_are_random_and_planted_in_the_system_message() -> None:
    a, b = new_canary(), new_canary()
    assert a != b and a.startswith(PREFIX) and len(a) == len(PREFIX) + 16
    assert plant("be nice", a) == f"be nice\n(ref: {a})"
    chat = "user: hi\nsystem: be nice\nuser: bye"
    assert plant_in_chat(chat, a) == f"user: hi\nsystem: (ref: {a}) be nice\nuser: bye"
    assert plant_in_chat("user: hi", a) == f"system: (ref: {a})\nuser: hi"
