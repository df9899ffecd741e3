"""``invalid_utf8``: text whose UTF-8 encoding is invalid.

A model and the checks before it may each repair broken UTF-8 differently (drop the bytes,
replace them with U+FFFD, decode them as Latin-1), so what was screened need not be what the
model reads. Bytes that do not decode are refused instead of guessed at. The native analysis
finds them (a Python ``str`` carries them as lone surrogates) and reports the byte offset of
the first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from infershield.checks.analysis import AnalysisCheck
from infershield.config import bounded, check_bounds
from infershield.native import Analysis
from infershield.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class InvalidUtf8Options:
    """Options of the ``invalid_utf8`` check."""

    #: Invalid bytes tolerated per text; more block (0: any invalid byte blocks).
    max_invalid_bytes: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        check_bounds(self)


class InvalidUtf8Check(AnalysisCheck):
    """Blocks text that is not valid UTF-8, naming the byte offset of the first bad byte."""

    Options = InvalidUtf8Options
    stages = ("input",)
    CATEGORY: ClassVar[str] = "encoding"
    REASON: ClassVar[str] = "invalid UTF-8"

    options: InvalidUtf8Options

    def _verdict(self, a: Analysis) -> Verdict:
        if not a.invalid_utf8:
            return self.allow()
        details = (("invalid_offset", str(a.invalid_offset)),
                   ("invalid_bytes", str(a.invalid_bytes)))
        if a.invalid_bytes > self.options.max_invalid_bytes:
            return self.block(self.REASON, 1.0, categories=(self.CATEGORY,), details=details)
        score = 0.5 * a.invalid_bytes / (self.options.max_invalid_bytes + 1)
        return self.allow(score=score, details=details)
