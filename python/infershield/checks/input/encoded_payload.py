"""``encoded_payload``: large base64/hex/url-encoded blobs in a prompt.

Blobs that decode to readable text are judged by what they say, not by their form: the
canonical view decodes them in place and ``signatures`` (and the classifier) score it, so
base64 of a benign request is allowed and base64 of an attack is blocked by its content. An
instruction to "decode and follow" hidden text is caught by the obfuscation rules. What
blocks here is what cannot be read: large opaque blobs (binary, or text we cannot decode),
a classic way to smuggle a payload past filters. ``max_decoded_chars`` opts into a volume
limit on readable decoded text too. ``data:image/...;base64,`` URIs are exempt by
default (pasted images are common and harmless to a text filter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from infershield.checks.analysis import AnalysisCheck
from infershield.checks.base import CheckContext
from infershield.config import bounded, check_bounds
from infershield.native import Analysis, analyses_for, analysis_for, analyze
from infershield.verdict import Verdict

#: The blob length the shared analysis uses; shorter thresholds need their own analysis.
_SHARED_MIN_BLOB_LEN = 24


@dataclass(frozen=True, kw_only=True)
class EncodedPayloadOptions:
    """Options of the ``encoded_payload`` check."""

    #: Shortest encoded run (bytes) that counts as a blob.
    min_blob_len: int = bounded(24, ge=4)
    #: Block when opaque blobs (not decodable to readable text) exceed this many bytes.
    max_opaque_bytes: int = bounded(2048, ge=0)
    #: Block when decoded readable text exceeds this many characters; None (the default):
    #: readable text is judged by its content only.
    max_decoded_chars: int | None = bounded(None, ge=0)
    #: Ignore base64 in ``data:...;base64,`` URIs.
    allow_data_uris: bool = True

    def __post_init__(self) -> None:
        check_bounds(self)


class EncodedPayloadCheck(AnalysisCheck):
    """Blocks prompts carrying large encoded payloads."""

    Options = EncodedPayloadOptions
    CATEGORY: ClassVar[str] = "obfuscation"
    REASON_OPAQUE: ClassVar[str] = "large opaque encoded blob"
    REASON_DECODED: ClassVar[str] = "large hidden text in encoded blobs"
    REASON_SMALL: ClassVar[str] = "encoded blob decoded (its text is judged in the canonical view)"

    options: EncodedPayloadOptions

    def _analysis(self, ctx: CheckContext) -> Analysis:
        if self.options.min_blob_len >= _SHARED_MIN_BLOB_LEN:
            return analysis_for(ctx)
        key = f"analysis.min_blob_len={self.options.min_blob_len}"
        return ctx.cached(key, lambda: analyze(ctx.text, min_blob_len=self.options.min_blob_len))

    def check(self, ctx: CheckContext) -> Verdict:
        return self._verdict(self._analysis(ctx))

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        if self.options.min_blob_len >= _SHARED_MIN_BLOB_LEN:
            return [self._verdict(a) for a in analyses_for(ctxs)]
        return [self.check(c) for c in ctxs]

    def _verdict(self, a: Analysis) -> Verdict:
        o = self.options
        opaque = decoded = count = 0
        for b in a.blobs:
            if b.end - b.start < o.min_blob_len:
                continue
            if o.allow_data_uris and b.kind == "base64_data_uri":
                continue
            count += 1
            if b.decoded:
                decoded += len(b.decoded)
            else:
                opaque += b.end - b.start
        if count == 0:
            return self.allow()
        details = (("blobs", str(count)), ("opaque_bytes", str(opaque)),
                   ("decoded_chars", str(decoded)))
        cats = (self.CATEGORY,)
        if opaque > o.max_opaque_bytes:
            score = min(1.0, 0.7 + 0.3 * (opaque - o.max_opaque_bytes) / (o.max_opaque_bytes + 1))
            return self.block(self.REASON_OPAQUE, score, categories=cats, details=details)
        if o.max_decoded_chars is not None and decoded > o.max_decoded_chars:
            excess = (decoded - o.max_decoded_chars) / (o.max_decoded_chars + 1)
            score = min(1.0, 0.7 + 0.3 * excess)
            return self.block(self.REASON_DECODED, score, categories=cats, details=details)
        # Readable blobs score a little so the pipeline reports them.
        score = max(0.5 * opaque / (o.max_opaque_bytes + 1), 0.1 if decoded else 0.0)
        if o.max_decoded_chars is not None:
            score = max(score, 0.5 * decoded / (o.max_decoded_chars + 1))
        return self.allow(self.REASON_SMALL, min(score, 0.5), details=details)
