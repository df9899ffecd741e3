"""``ban_substrings``: operator-listed phrases, matched as literals through the native core."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from infershield.checks.base import Check, CheckContext, Stage
from infershield.config import Config
from infershield.errors import ConfigError
from infershield.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class BanSubstringsOptions:
    """Options of the ``ban_substrings`` check."""

    substrings: tuple[str, ...] = ()
    case_sensitive: bool = False
    action: Literal["block", "redact"] = "block"
    #: Category reported for a match.
    category: str = "banned"


def literal_pattern(text: str) -> str:
    """A Hyperscan expression matching ``text`` literally.

    ASCII punctuation and whitespace become ``\\xHH`` escapes (unambiguous in Hyperscan's
    PCRE syntax); letters, digits and non-ASCII characters stay as they are (UTF-8 mode).
    """
    out: list[str] = []
    for ch in text:
        if ch.isalnum() or ord(ch) > 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return "".join(out)


class BanSubstringsCheck(Check):
    """Blocks or redacts text that contains any listed substring."""

    runs_inline: ClassVar[bool] = True  # native scan, GIL released

    Options: ClassVar[type[Any]] = BanSubstringsOptions
    stages: ClassVar[tuple[Stage, ...]] = ("input", "output")
    REASON: ClassVar[str] = "banned substring(s) #{indices}"

    def __init__(
        self, name: str, options: BanSubstringsOptions | None = None, *,
        cache_dir: Path | None = None,
    ) -> None:
        from infershield.native import Matcher, Pattern

        super().__init__(name, options)
        opts: BanSubstringsOptions = self.options
        if not opts.substrings:
            raise ConfigError("substrings: needs at least one entry")
        for i, s in enumerate(opts.substrings):
            if not s:
                raise ConfigError(f"substrings[{i}]: must not be empty")
        caseless = not opts.case_sensitive
        self._matcher = Matcher(
            [
                Pattern(
                    f"ban.{i}",
                    literal_pattern(s),
                    caseless=caseless,
                    dotall=True,
                    # Case folding beyond ASCII needs Unicode properties.
                    ucp=caseless and not s.isascii(),
                    som=opts.action == "redact",
                )
                for i, s in enumerate(opts.substrings)
            ],
            cache_dir=cache_dir,
        )

    @classmethod
    def from_config(
        cls, name: str, options: BanSubstringsOptions, config: Config
    ) -> BanSubstringsCheck:
        """Build with the compiled-database cache under ``config.cache_path``."""
        return cls(name, options, cache_dir=config.cache_path / "hyperscan")

    def max_match_chars(self) -> int | None:
        """The longest listed substring (the streaming hold-back)."""
        return max(len(s) for s in self.options.substrings)

    def check(self, ctx: CheckContext) -> Verdict:
        return self.check_batch([ctx])[0]

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        t0 = time.perf_counter()
        texts = [c.text for c in ctxs]
        opts: BanSubstringsOptions = self.options
        if opts.action == "redact":
            results = self._matcher.scan_batch(texts)
            per_item = (time.perf_counter() - t0) * 1000.0 / max(len(ctxs), 1)
            return [self._redact(t, ms, per_item) for t, ms in zip(texts, results, strict=True)]
        sets = self._matcher.matched_indices_batch(texts)
        per_item = (time.perf_counter() - t0) * 1000.0 / max(len(ctxs), 1)
        out: list[Verdict] = []
        for hit in sets:
            if not hit:
                out.append(self.allow(elapsed_ms=per_item))
            else:
                out.append(self.block(self._reason(hit), 1.0, categories=(opts.category,),
                                      elapsed_ms=per_item))
        return out

    def _reason(self, hit: set[int]) -> str:
        # Indices, not the phrases: the banned list itself may be sensitive.
        return self.REASON.format(indices=",".join(str(i) for i in sorted(hit)))

    def _redact(self, text: str, matches: Sequence[Any], elapsed_ms: float) -> Verdict:
        if not matches:
            return self.allow(elapsed_ms=elapsed_ms)
        data = text.encode("utf-8", "surrogatepass")
        # Merge overlapping byte spans, then cut on bytes (spans sit on character bounds).
        spans = sorted((m.start if m.start is not None else 0, m.end) for m in matches)
        merged: list[list[int]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        parts: list[bytes] = []
        pos = 0
        for s, e in merged:
            parts.append(data[pos:s])
            parts.append(b"[REDACTED:banned]")
            pos = e
        parts.append(data[pos:])
        rewritten = b"".join(parts).decode("utf-8", "surrogatepass")
        opts: BanSubstringsOptions = self.options
        return self.redact(self._reason({m.index for m in matches}), rewritten, 1.0,
                           categories=(opts.category,), elapsed_ms=elapsed_ms)
