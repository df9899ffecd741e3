"""``length``: character and token limits per text.

A policy-level bound on what reaches the model, apart from the server's request limits
(``limits.max_input_bytes``/``max_input_tokens``): a route can allow short prompts only, or
refuse empty ones. Characters are Unicode code points. Tokens are the native analysis'
word tokens, or, with ``tokenizer``, the tokens of a Hugging Face ``tokenizer.json`` (the
served model's own, special tokens included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from infershield.checks.base import Check, CheckContext
from infershield.config import OptionError, bounded, check_bounds
from infershield.native import analysis_for
from infershield.tokens import HFTokenCounter
from infershield.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class LengthOptions:
    """Options of the ``length`` check. A limit of 0 is off; at least one maximum is on."""

    #: Block a text of more than this many characters (code points).
    max_chars: int = bounded(100_000, ge=0)
    #: Block a text of more than this many tokens.
    max_tokens: int = bounded(0, ge=0)
    #: Block a text of fewer than this many characters (1 refuses empty text).
    min_chars: int = bounded(0, ge=0)
    #: Count ``max_tokens`` with this ``tokenizer.json``; empty: the native word tokens.
    tokenizer: str = ""

    def __post_init__(self) -> None:
        check_bounds(self)
        if not self.max_chars and not self.max_tokens:
            raise OptionError(
                "max_chars", "set max_chars or max_tokens (both 0 would check nothing)"
            )
        if self.max_chars and self.min_chars > self.max_chars:
            raise OptionError("min_chars", "must not exceed max_chars")
        if self.tokenizer and not self.max_tokens:
            raise OptionError("tokenizer", "counts max_tokens: set max_tokens too")


class LengthCheck(Check):
    """Blocks texts outside the configured character and token bounds."""

    Options = LengthOptions
    CATEGORY: ClassVar[str] = "length"
    REASON_CHARS: ClassVar[str] = "text longer than max_chars"
    REASON_TOKENS: ClassVar[str] = "text longer than max_tokens"
    REASON_SHORT: ClassVar[str] = "text shorter than min_chars"

    options: LengthOptions

    def __init__(self, name: str, options: LengthOptions | None = None) -> None:
        super().__init__(name, options)
        o = self.options
        self._counter = HFTokenCounter(Path(o.tokenizer).expanduser()) if o.tokenizer else None

    def check(self, ctx: CheckContext) -> Verdict:
        o = self.options
        a = analysis_for(ctx)
        chars = a.code_points
        details: list[tuple[str, str]] = [("chars", str(chars))]
        cats = (self.CATEGORY,)
        if o.max_chars and chars > o.max_chars:
            return self.block(self.REASON_CHARS, categories=cats, details=tuple(details))
        if chars < o.min_chars:
            return self.block(self.REASON_SHORT, categories=cats, details=tuple(details))
        score = chars / (o.max_chars + 1) if o.max_chars else 0.0
        if o.max_tokens:
            tokens = a.token_count if self._counter is None else self._counter.count(ctx.text)
            details.append(("tokens", str(tokens)))
            if tokens > o.max_tokens:
                return self.block(self.REASON_TOKENS, categories=cats, details=tuple(details))
            score = max(score, tokens / (o.max_tokens + 1))
        return self.allow(score=0.5 * score, details=tuple(details))
