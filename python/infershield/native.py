"""Pythonic layer over :mod:`infershield._native` (the C++ Hyperscan matcher and analyzer).

Strings are encoded with ``encode("utf-8", "surrogatepass")``: a lone surrogate becomes an
invalid UTF-8 sequence that the native code reports, instead of an exception here. All
offsets are byte offsets into that UTF-8 encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from infershield import _native
from infershield.errors import ConfigError

__all__ = [
    "TEMPLATE_TOKENS",
    "Analysis",
    "Blob",
    "Match",
    "Matcher",
    "Pattern",
    "PatternError",
    "analyses_for",
    "analysis_for",
    "analyze",
    "analyze_batch",
    "encode",
    "hyperscan_version",
    "normalize",
]

#: The native analysis of one text (read-only; see native/include/infershield/analyzer.hpp).
Analysis = _native.Analysis
#: An encoded run found by :func:`analyze`: ``kind`` (base64, base64_data_uri, hex, url),
#: byte offsets ``start``/``end`` and ``decoded`` text ("" when opaque or not printable).
Blob = _native.Blob
#: The chat-template control tokens :func:`analyze` reports, in canonical spelling.
TEMPLATE_TOKENS: tuple[str, ...] = tuple(_native.template_token_list())


def encode(text: str | bytes) -> bytes:
    """UTF-8 bytes of ``text``; lone surrogates pass through as invalid UTF-8."""
    if isinstance(text, bytes):
        return text
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    raise TypeError(f"expected str or bytes, got {type(text).__name__}")


def hyperscan_version() -> str:
    """The linked Hyperscan library's version string."""
    return _native.Matcher.hyperscan_version()


@dataclass(frozen=True, slots=True)
class Pattern:
    """One rule for the :class:`Matcher`. ``som`` asks for start offsets (slower; opt-in)."""

    id: str
    expression: str
    caseless: bool = True
    dotall: bool = True
    multiline: bool = False
    utf8: bool = True
    ucp: bool = False
    som: bool = False

    def native_flags(self) -> int:
        """The flag bits the native matcher expects."""
        flags = 0
        for on, bit in (
            (self.caseless, _native.CASELESS),
            (self.dotall, _native.DOTALL),
            (self.multiline, _native.MULTILINE),
            (self.utf8, _native.UTF8),
            (self.ucp, _native.UCP),
            (self.som, _native.SOM),
        ):
            if on:
                flags |= bit
        return flags


class PatternError(ConfigError):
    """A pattern failed to compile; ``rule_id`` names it (``None`` if Hyperscan could not)."""

    def __init__(self, message: str, *, rule_id: str | None) -> None:
        super().__init__(message)
        self.rule_id = rule_id


@dataclass(frozen=True, slots=True)
class Match:
    """One match: rule ``index`` into ``Matcher.patterns``, byte offsets into the UTF-8 text.

    ``start`` is ``None`` unless the pattern has ``som=True``.
    """

    index: int
    start: int | None
    end: int


class Matcher:
    """A rule set compiled once into one Hyperscan database.

    Scans are thread-safe (each concurrent scan uses its own scratch space) and release the
    GIL. With ``cache_dir`` the compiled database is stored in and loaded from a file keyed
    by the rule-set hash and the Hyperscan version; a stale or corrupt file is rebuilt.
    """

    def __init__(self, patterns: Sequence[Pattern], *, cache_dir: Path | None = None) -> None:
        self.patterns: tuple[Pattern, ...] = tuple(patterns)
        seen: set[str] = set()
        for p in self.patterns:
            if p.id in seen:
                raise PatternError(f"duplicate pattern id {p.id!r}", rule_id=p.id)
            seen.add(p.id)
        spec = [(p.id, p.expression, p.native_flags()) for p in self.patterns]
        cache = None
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            cache = str(cache_dir)
        try:
            self._m = _native.Matcher(spec, cache)
        except _native.CompileError as exc:
            rule_id: str | None = getattr(exc, "rule_id", "") or None
            raise PatternError(str(exc), rule_id=rule_id) from None

    def __len__(self) -> int:
        return len(self.patterns)

    @property
    def rule_set_hash(self) -> str:
        """Digest of the patterns and the Hyperscan version (the cache key)."""
        return self._m.rule_set_hash

    @property
    def cache_status(self) -> str:
        """``disabled``, ``hit``, ``compiled`` (no cache file yet) or ``rebuilt`` (stale file)."""
        return self._m.cache_status

    @property
    def cache_path(self) -> Path | None:
        """The cache file in use, if any."""
        return Path(self._m.cache_path) if self._m.cache_path else None

    def scan(self, text: str | bytes) -> list[Match]:
        """Every match in ``text``, ordered by end offset."""
        return [Match(*m) for m in self._m.scan(encode(text))]

    def scan_batch(self, texts: Sequence[str | bytes]) -> list[list[Match]]:
        """``scan`` over many texts in one native call."""
        out = self._m.scan_batch([encode(t) for t in texts])
        return [[Match(*m) for m in ms] for ms in out]

    def matched_indices(self, text: str | bytes) -> set[int]:
        """The distinct pattern indices that match ``text`` (faster than ``scan``)."""
        return set(self._m.matched(encode(text)))

    def matched_indices_batch(self, texts: Sequence[str | bytes]) -> list[set[int]]:
        """``matched_indices`` over many texts in one native call."""
        return [set(ms) for ms in self._m.matched_batch([encode(t) for t in texts])]

    def serialize(self) -> bytes:
        """The compiled database in Hyperscan's serialised form."""
        return self._m.serialize()


def analyze(text: str | bytes, *, min_blob_len: int = 24, canonical: bool = True) -> Analysis:
    """Token-level analysis of ``text`` in native code (the GIL is released).

    Reports invalid UTF-8 (``invalid_offset`` is a byte offset), invisible characters and
    the ASCII hidden in Unicode tags, mixed-script words, encoded blobs with their decoded
    text, repetition statistics, chat-template tokens and the canonical view
    (``normalized``, see :func:`normalize`; ``transforms`` lists what it decoded).
    ``canonical=False`` keeps the plain fold in ``normalized`` (no decoding or joining): it
    exists to measure what the canonical view costs.
    """
    if min_blob_len < 4:
        raise ValueError("min_blob_len must be at least 4")
    return _native.analyze(encode(text), min_blob_len, canonical)


def analyze_batch(texts: Sequence[str | bytes], *, min_blob_len: int = 24) -> list[Analysis]:
    """:func:`analyze` over many texts in one native call."""
    if min_blob_len < 4:
        raise ValueError("min_blob_len must be at least 4")
    return _native.analyze_batch([encode(t) for t in texts], min_blob_len)


def normalize(text: str | bytes) -> str:
    """The canonical view of ``text`` (``Analysis.normalized``): confusables, full-width,
    diacritics and leetspeak folded, invisibles removed, spelled-out letters joined,
    readable base64/hex/url blobs and ROT13/reversed segments decoded in place, whitespace
    collapsed, lowercased."""
    return _native.normalize(encode(text))


#: The memo key under which checks share one analysis per text.
ANALYSIS_KEY = "analysis"


class _Memoised(Protocol):
    """What :func:`analysis_for` needs of a check context."""

    text: str
    memo: dict[str, Any]

    def cached(self, key: str, compute: Any) -> Any: ...


def analysis_for(ctx: _Memoised) -> Analysis:
    """The default analysis of ``ctx.text``, computed once per text and shared by checks."""
    result: Analysis = ctx.cached(ANALYSIS_KEY, lambda: analyze(ctx.text))
    return result


def analyses_for(ctxs: Sequence[_Memoised]) -> list[Analysis]:
    """:func:`analysis_for` over a batch: the texts not analysed yet go in one native call."""
    missing = [c for c in ctxs if ANALYSIS_KEY not in c.memo]
    if missing:
        for c, a in zip(missing, analyze_batch([c.text for c in missing]), strict=True):
            c.memo[ANALYSIS_KEY] = a
    return [analysis_for(c) for c in ctxs]
