"""``prompt_leak``: an output that reproduces the system prompt, or carries a canary token.

System prompt: both texts are folded to lower-case words (markdown, punctuation and
whitespace dropped), and the output leaks when it contains any run of ``min_span_words``
consecutive words of the prompt (n-gram containment). A prompt shorter than that is never
matched: a two-word prompt is ordinary text.

Canaries: random tokens the firewall plants in the system prompt it forwards
(``policy.canary``). An output carrying one, as is, in hex or in base64 (also inside a
longer encoded blob), leaks the prompt, whatever else it says.

Both come from the request (:attr:`CheckContext.system_prompt`,
:attr:`CheckContext.canaries`); with neither there is nothing to compare and the output is
allowed. Reasons never quote the prompt or the canary.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from infershield.checks.base import Check, CheckContext, Stage
from infershield.config import bounded, check_bounds
from infershield.verdict import Verdict

_WORD = re.compile(r"\w+", re.UNICODE)
_HEX_RUN = re.compile(r"(?:[0-9A-Fa-f]{2}[\s:\-]?){8,}")
_B64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{12,}={0,2}")
#: Longest encoded canary the check must see whole (hex with separators of a 20-char token).
CANARY_MATCH_CHARS = 96


@dataclass(frozen=True, kw_only=True)
class PromptLeakOptions:
    """Options of the ``prompt_leak`` check."""

    #: Consecutive words of the system prompt that make a leak (shorter spans are ordinary).
    min_span_words: int = bounded(8, ge=3)

    def __post_init__(self) -> None:
        check_bounds(self)


@functools.lru_cache(maxsize=256)
def _ngrams(prompt: str, n: int) -> frozenset[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(prompt)]
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _decoded_views(text: str) -> list[tuple[str, bytes]]:
    """Hex and base64 runs of ``text``, decoded (base64 at every alignment, both alphabets),
    each with its encoding's name."""
    out: list[tuple[str, bytes]] = []
    for m in _HEX_RUN.finditer(text):
        digits = re.sub(r"[\s:\-]", "", m.group())
        for shift in (0, 1):
            chunk = digits[shift:]
            try:
                out.append(("hex", bytes.fromhex(chunk[: len(chunk) // 2 * 2])))
            except ValueError:
                continue
    for m in _B64_RUN.finditer(text):
        run = m.group().rstrip("=")
        for shift in range(4):
            part = run[shift:]
            if len(part) % 4 == 1:
                part = part[:-1]  # a lone trailing character encodes no whole byte
            if not part:
                continue
            part += "=" * (-len(part) % 4)
            for alt in (b"+/", b"-_"):
                try:
                    out.append(("base64", base64.b64decode(part, altchars=alt, validate=False)))
                except (binascii.Error, ValueError):
                    continue
    return out


class PromptLeakCheck(Check):
    """Blocks outputs that repeat a long span of the system prompt or carry a canary."""

    runs_inline: ClassVar[bool] = True  # word sets and a few regexes on short texts

    Options: ClassVar[type[Any]] = PromptLeakOptions
    stages: ClassVar[tuple[Stage, ...]] = ("output",)
    REASON_SPAN: ClassVar[str] = "output reproduces {n}+ consecutive words of the system prompt"
    REASON_CANARY: ClassVar[str] = "output carries the request's canary token ({form})"
    REASON_NOTHING: ClassVar[str] = "no system prompt or canary for this request"

    def __init__(self, name: str, options: PromptLeakOptions | None = None) -> None:
        super().__init__(name, options)

    def max_match_chars(self) -> int | None:
        """The longest encoded canary; a system prompt's span is per request
        (:meth:`span_chars`)."""
        return CANARY_MATCH_CHARS

    def span_chars(self, prompt: str) -> int:
        """Characters the longest ``min_span_words`` run of ``prompt`` may take in an output,
        allowing for added markdown and spacing: the hold-back a stream needs for it."""
        n: int = self.options.min_span_words
        spans = [(m.start(), m.end()) for m in _WORD.finditer(prompt)]
        if len(spans) < n:
            return 0
        longest = max(spans[i + n - 1][1] - spans[i][0] for i in range(len(spans) - n + 1))
        return longest * 3 // 2 + 16

    def check(self, ctx: CheckContext) -> Verdict:
        if not ctx.system_prompt and not ctx.canaries:
            return self.allow(self.REASON_NOTHING)
        for form in self._canary_forms(ctx):
            return self.block(self.REASON_CANARY.format(form=form), 1.0,
                              categories=("leak", "canary"), details=(("leak", "canary"),))
        n = self.options.min_span_words
        if ctx.system_prompt:
            grams = _ngrams(ctx.system_prompt, n)
            if grams:
                words = [w.lower() for w in _WORD.findall(ctx.text)]
                hits = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)} & grams
                if hits:
                    return self.block(
                        self.REASON_SPAN.format(n=n),
                        min(1.0, 0.8 + len(hits) / max(len(grams), 1)),
                        categories=("leak", "system_prompt"),
                        details=(("leak", "system_prompt"), ("ngrams", str(len(hits)))),
                    )
        return self.allow()

    @staticmethod
    def _canary_forms(ctx: CheckContext) -> list[str]:
        found: list[str] = []
        low = ctx.text.lower()
        views: list[tuple[str, bytes]] | None = None
        for canary in ctx.canaries:
            if canary.lower() in low:
                found.append("plain")
                continue
            if views is None:
                views = _decoded_views(ctx.text)
            token = canary.encode("utf-8").lower()
            found.extend(form for form, v in views if token in v.lower())
        return found
