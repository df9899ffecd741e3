"""``encoded_payload``: large base64/hex/url-encoded blobs in a prompt.

Small blobs that decode to text are allowed here: their decoded text is scanned by
``signatures``, which judges what it says. What blocks is *volume*: large opaque blobs
(binary, or text we cannot read) and large amounts of hidden decoded text, both classic
ways to smuggle a payload past filters. ``data:image/...;base64,`` URIs are exempt by
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
    #: Block when decoded readable text exceeds this many characters.
    max_decoded_chars: int = bounded(1024, ge=0)
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
    REASON_SMALL: ClassVar[str] = "encoded blob decoded (its text is scanned by signatures)"

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
        if decoded > o.max_decoded_chars:
            excess = (decoded - o.max_decoded_chars) / (o.max_decoded_chars + 1)
            score = min(1.0, 0.7 + 0.3 * excess)
            return self.block(self.REASON_DECODED, score, categories=cats, details=details)
        score = 0.5 * max(opaque / (o.max_opaque_bytes + 1), decoded / (o.max_decoded_chars + 1))
        return self.allow(self.REASON_SMALL, min(score, 0.5), details=details)
