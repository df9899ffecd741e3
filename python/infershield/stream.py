"""Screening a streamed output across response boundaries, free of any transport.

A decoupled (token-streaming) model sends one text in many small responses, so a secret, an
e-mail address or a span of the system prompt usually arrives split across two or more of
them. :class:`StreamScreener` keeps one such text (one element of one output tensor of one
request) and decides, chunk by chunk, what may be released to the client:

* Every chunk is appended to the *pending* text, which has not been sent yet.
* When more than ``holdback`` characters are pending (or the stream ends), the look-back
  context (the last ``lookback`` characters already sent) plus the pending text is screened
  as one window. Everything but the last ``holdback`` characters is released at once, after
  any redaction, and the tail stays pending. A match no longer than ``holdback`` characters
  therefore always lies whole in unsent text when it is first seen, so a redaction never
  lands in text that was already sent.
* A redaction that reaches the tail moves the release point back to where it starts (the
  match may still be growing); one that reaches into text already sent (a match longer than
  the hold-back) ends the stream, as does any block: fail closed.

The screener does not run checks itself: :meth:`window` says what to screen and
:meth:`advance` takes the pipeline's result, so the caller decides where checks run (the
firewall runs them off the event loop); :meth:`feed` does both for synchronous callers.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from infershield.errors import Blocked
from infershield.pipeline import PipelineResult
from infershield.verdict import Decision

#: Hold-back used when no check can bound the length of what it matches.
DEFAULT_HOLDBACK_CHARS = 128
#: Upper bound of a derived hold-back: a longer match is caught by the look-back and ends
#: the stream instead of delaying every response by that much.
MAX_DERIVED_HOLDBACK_CHARS = 1024
#: Shortest run of unchanged characters that counts as an anchor when aligning a redacted
#: window with the original: shorter coincidences inside a replacement are not trusted.
MIN_ANCHOR_CHARS = 8


@dataclass(frozen=True, slots=True)
class _Gap:
    """A changed region: ``x[xs:xe]`` became ``r[rs:re]``."""

    xs: int
    xe: int
    rs: int
    re: int


def derive_holdback(lengths: Iterable[int | None]) -> int:
    """The default hold-back for checks that report the longest text they match (``None``
    where they cannot bound it): the longest of them, at least :data:`DEFAULT_HOLDBACK_CHARS`
    and at most :data:`MAX_DERIVED_HOLDBACK_CHARS`."""
    known = [n if n is not None else DEFAULT_HOLDBACK_CHARS for n in lengths]
    return min(max([DEFAULT_HOLDBACK_CHARS, *known]), MAX_DERIVED_HOLDBACK_CHARS)


def align(x: str, r: str) -> list[_Gap]:
    """The regions of ``x`` that a rewrite turned into ``r``, in order.

    Redactions replace spans and keep the rest, so the unchanged prefix and suffix are
    trimmed first and the middle is aligned on runs of at least :data:`MIN_ANCHOR_CHARS`
    unchanged characters; anything between anchors is one changed region.
    """
    if x == r:
        return []
    p = 0
    n = min(len(x), len(r))
    while p < n and x[p] == r[p]:
        p += 1
    s = 0
    while s < n - p and x[len(x) - 1 - s] == r[len(r) - 1 - s]:
        s += 1
    mid_x, mid_r = x[p : len(x) - s], r[p : len(r) - s]
    blocks = difflib.SequenceMatcher(None, mid_x, mid_r, autojunk=False).get_matching_blocks()
    gaps: list[_Gap] = []
    xi = ri = 0
    for b in blocks:
        if b.size < MIN_ANCHOR_CHARS and b.size != 0:
            continue  # too short to trust: part of the surrounding change
        if b.a > xi or b.b > ri:
            gaps.append(_Gap(p + xi, p + b.a, p + ri, p + b.b))
        xi, ri = b.a + b.size, b.b + b.size
    if xi < len(mid_x) or ri < len(mid_r):
        gaps.append(_Gap(p + xi, p + len(mid_x), p + ri, p + len(mid_r)))
    return gaps


def _to_rewritten(pos: int, gaps: list[_Gap]) -> int:
    """Position in the rewritten text of ``pos`` (which no gap straddles); a pure insertion
    at ``pos`` counts as after it."""
    shift = 0
    for g in gaps:
        if g.xe < pos or (g.xe == pos and g.xs < pos):
            shift += (g.re - g.rs) - (g.xe - g.xs)
    return pos + shift


class StreamScreener:
    """Decides what of one streamed text may be released, one chunk at a time.

    Not thread-safe: one per streamed text, driven by one task.
    """

    def __init__(self, holdback: int, lookback: int | None = None) -> None:
        if holdback < 0:
            raise ValueError("holdback must not be negative")
        self.holdback = holdback
        self.lookback = holdback if lookback is None else lookback
        self._pending = ""
        self._sent = ""  # the last ``lookback`` characters released
        self._window: tuple[str, int, bool] | None = None  # (text, len of context, final)
        self.released_chars = 0
        self.closed = False

    @property
    def pending(self) -> str:
        """Text received and not yet released."""
        return self._pending

    def window(self, chunk: str, *, final: bool = False) -> str | None:
        """Append ``chunk``; return the text to screen before anything can be released, or
        None when nothing can be released yet (the pending text fits in the hold-back)."""
        if self.closed:
            raise RuntimeError("the stream screener is closed")
        if self._window is not None:
            raise RuntimeError("window() called again before advance()")
        self._pending += chunk
        if not self._pending or (not final and len(self._pending) <= self.holdback):
            if final:
                self.closed = True
            return None
        text = self._sent + self._pending
        self._window = (text, len(self._sent), final)
        return text

    def advance(self, result: PipelineResult) -> str:
        """Take the screening of the last :meth:`window` and return the text to release.

        Raises :class:`~infershield.errors.Blocked` when the window is blocked, or when a
        redaction reaches into text that was already sent.
        """
        if self._window is None:
            raise RuntimeError("advance() called without a window")
        x, ctx_len, final = self._window
        self._window = None
        if result.blocked:
            self.closed = True
            v = result.blocking_verdict
            assert v is not None  # a blocked result has a blocking verdict
            raise Blocked(
                check=v.check,
                reason=f"{v.reason} (streamed output)",
                categories=v.categories or tuple(result.categories),
                stage="output",
                score=result.score,
                details=v.details,
            )
        cut = len(x) if final else len(x) - self.holdback
        gaps = align(x, result.text) if result.decision is Decision.REDACT else []
        for g in gaps:
            if g.xs < ctx_len < g.xe:
                self.closed = True
                raise Blocked(
                    check=_redactor(result),
                    reason="a redaction reaches into output already sent (streamed output)",
                    categories=tuple(result.categories),
                    stage="output",
                    score=result.score,
                )
            # A change reaching past the cut may be a match still growing: hold it whole.
            # (Gaps are ordered and disjoint, so moving back never lands inside another.)
            if not final and g.xs < cut < g.xe:
                cut = g.xs
        r = result.text
        start = _to_rewritten(ctx_len, gaps)
        end = len(r) if final else _to_rewritten(cut, gaps)
        released = r[start:end]
        self._pending = x[cut:] if not final else ""
        if final:
            self.closed = True
        self._sent = (self._sent + released)[-self.lookback :] if self.lookback else ""
        self.released_chars += len(released)
        return released

    def feed(
        self, chunk: str, screen: Callable[[str], PipelineResult], *, final: bool = False
    ) -> str:
        """:meth:`window` and :meth:`advance` in one synchronous call."""
        text = self.window(chunk, final=final)
        if text is None:
            return ""
        return self.advance(screen(text))


def _redactor(result: PipelineResult) -> str:
    for v in result.verdicts:
        if v.decision is Decision.REDACT:
            return v.check
    return "output"
