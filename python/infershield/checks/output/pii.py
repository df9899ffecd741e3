"""``pii``: personal data (email, phone, card, IBAN, SSN, IP) found, validated, redacted.

Hyperscan finds candidate spans with start offsets; Luhn, IBAN mod-97 and SSA-range checks
run in Python on those spans only. ``action: redact`` (the default) rewrites each finding
to ``[REDACTED:<kind>]``; ``action: block`` blocks. Reasons name kinds, never the values.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from infershield.checks.base import Check, CheckContext, Stage
from infershield.config import Config
from infershield.errors import ConfigError
from infershield.rules import SEVERITIES, SEVERITY_SCORE, load_packs
from infershield.rules.spans import Finding, SpanDetector, redact
from infershield.verdict import Verdict

Action = Literal["block", "redact"]
Severity = Literal["low", "medium", "high", "critical"]


@dataclass(frozen=True, kw_only=True)
class PiiOptions:
    """Options of the ``pii`` check."""

    action: Action = "redact"
    #: Kinds to detect (``email``, ``phone``, ``credit_card``, ``iban``, ``us_ssn``,
    #: ``ipv4``, ``ipv6``); empty means every kind in ``packs``.
    detectors: tuple[str, ...] = ()
    packs: tuple[str, ...] = ("pii",)
    #: Rules below this severity are not loaded.
    min_severity: Severity = "low"


class SpanRuleCheck(Check):
    """Base of checks built on span packs: find, validate, then block or redact."""

    Options: ClassVar[type[Any]] = PiiOptions
    stages: ClassVar[tuple[Stage, ...]] = ("input", "output")
    LABEL: ClassVar[str] = "pii"

    def __init__(self, name: str, options: Any = None, *, cache_dir: Path | None = None) -> None:
        super().__init__(name, options)
        opts = self.options
        floor = SEVERITIES.index(opts.min_severity)
        rules = [r for r in load_packs(opts.packs) if r.severity_rank >= floor]
        kinds = {r.kind for r in rules}
        unknown = sorted(set(opts.detectors) - kinds)
        if unknown:
            raise ConfigError(f"detectors: unknown kind(s) {unknown} (known: {sorted(kinds)})")
        if opts.detectors:
            rules = [r for r in rules if r.kind in opts.detectors]
        self._detector = SpanDetector(rules, cache_dir)

    @classmethod
    def from_config(cls, name: str, options: Any, config: Config) -> SpanRuleCheck:
        """Build with the compiled-database cache under ``config.cache_path``."""
        return cls(name, options, cache_dir=config.cache_path / "hyperscan")

    def max_match_chars(self) -> int | None:
        """The longest text a rule of this check needs (the streaming hold-back)."""
        from infershield.rules.width import max_match_chars

        return max_match_chars(self._detector.rules)

    @property
    def kinds(self) -> list[str]:
        return sorted({r.kind for r in self._detector.rules})

    def check(self, ctx: CheckContext) -> Verdict:
        return self.check_batch([ctx])[0]

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        t0 = time.perf_counter()
        found = self._detector.find_batch([c.text for c in ctxs])
        per_item = (time.perf_counter() - t0) * 1000.0 / max(len(ctxs), 1)
        return [self._verdict(c.text, f, per_item) for c, f in zip(ctxs, found, strict=True)]

    def _verdict(self, text: str, findings: list[Finding], elapsed_ms: float) -> Verdict:
        if not findings:
            return self.allow(elapsed_ms=elapsed_ms)
        counts = Counter(f.kind for f in findings)
        kinds = ",".join(sorted(counts))
        score = max(SEVERITY_SCORE[f.severity] for f in findings)
        kw: dict[str, Any] = {
            "categories": tuple(dict.fromkeys(f.category for f in findings)),
            "elapsed_ms": elapsed_ms,
            "details": tuple((k, str(n)) for k, n in sorted(counts.items())),
        }
        if self.options.action == "block":
            return self.block(f"{self.LABEL} found: {kinds}", score, **kw)
        return self.redact(f"{self.LABEL} redacted: {kinds}", redact(text, findings), score, **kw)


class PiiCheck(SpanRuleCheck):
    """Finds and redacts (or blocks) personal data."""

    runs_inline: ClassVar[bool] = True  # native scan, GIL released

    Options: ClassVar[type[Any]] = PiiOptions
    LABEL: ClassVar[str] = "pii"
