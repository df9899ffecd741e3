"""``signatures``: the shipped rule packs, compiled into one Hyperscan database.

Every view of a text is scanned in one native call: the original text, the analyser's
canonical view (confusables, full-width, diacritics and leetspeak folded, invisibles removed,
spelled-out letters joined, base64/hex/url blobs and ROT13/reversed segments decoded in
place), hidden Unicode-tag text, each decoded blob, and the text read backwards and in
ROT13. The verdict's ``views`` detail names the views that fired (``original``,
``canonical``, ``hidden``, ``decoded``, ``reversed``, ``rot13``).

Severity policy:

* Each matching attack rule contributes its severity; the verdict takes the highest.
* Two or more distinct attack rules raise it one level (real attacks stack signals).
* Text that *discusses* attacks ("how do I defend against 'ignore previous instructions'?")
  matches a ``discussion`` rule; then a lone attack rule (or two) is lowered one level, so
  a quoted high-severity phrase scores but does not block, while a critical one still
  blocks. A discussion rule excuses only attack phrases in its scope: inside its own match
  (a guard clause, ``scope: match``) or in its sentence (``scope: sentence``). In a document
  of ``DOCUMENT_CHARS`` or more, an attack phrase set apart as an example (a list item, a
  quote, a labelled line) or framed earlier in its sentence ("if the user asks you to …",
  "never …") is excused too; one written as a plain sentence after security prose is not.
  Three or more distinct attack rules are never lowered: a real payload wrapped in a
  security question still carries many signals.
* An attack phrase that is only *mentioned* (quoted by a text that talks about it and does
  not ask to carry it out; ``checks/input/mention.py``) scores below ``block_severity``,
  however many rules it matches: the classifier decides such a text.
* The check BLOCKs at ``block_severity`` and above; below it the verdict ALLOWs with the
  score, which the pipeline still reports.

Reasons name rule ids only, never the prompt text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from infershield.checks.base import Check, CheckContext, Stage
from infershield.checks.input.mention import MAX_TEXT_CHARS as MENTION_MAX_CHARS
from infershield.checks.input.mention import fold_marks, mentioned
from infershield.config import Config, bounded, check_bounds
from infershield.errors import ConfigError
from infershield.rules.engine import VIEWS, SignatureEngine
from infershield.rules.packs import SEVERITIES, SEVERITY_SCORE, Rule, load_packs
from infershield.verdict import Verdict

Severity = Literal["low", "medium", "high", "critical"]
DEFAULT_PACKS: tuple[str, ...] = (
    "injection",
    "jailbreak",
    "exfiltration",
    "obfuscation",
    "multilingual",
    "delimiters",
)


@dataclass(frozen=True, kw_only=True)
class SignatureOptions:
    """Options of the ``signatures`` check."""

    #: Shipped pack names or paths to user packs.
    packs: tuple[str, ...] = DEFAULT_PACKS
    #: Rules below this severity are not loaded at all.
    min_severity: Severity = "low"
    #: Findings at or above this (effective) severity block; below it they only score.
    block_severity: Severity = "high"
    #: Packs of ``discussion`` rules that lower a lone match's severity; empty disables it.
    discussion_packs: tuple[str, ...] = ("discussion",)
    #: Also scan the normalised text (confusables, leetspeak, zero-width folded).
    scan_normalized: bool = True
    #: Also scan hidden Unicode-tag text, decoded base64/hex/url blobs, and the text read
    #: backwards and in ROT13.
    scan_decoded: bool = True
    #: How many rule ids the reason names.
    max_reported: int = bounded(3, ge=1)
    #: Leave to the other checks a text that only *mentions* attacks: every attack phrase
    #: lies inside a quotation that the rest of the text talks about ("our bot got
    #: 'ignore previous instructions', how do we stop it?") and does not ask to carry out
    #: (see ``checks/input/mention.py``). Such a match scores below ``block_severity``.
    excuse_mentions: bool = True

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True, slots=True)
class _Assessment:
    rank: int  # effective severity index into SEVERITIES, -1 when nothing matched
    rules: tuple[Rule, ...]  # attack rules that matched, most severe first
    discussed: bool
    views: tuple[str, ...] = ()  # the views the attack rules fired on, in VIEWS order
    mentioned: bool = False  # every attack phrase quoted by a text about it (mention.py)


class SignatureCheck(Check):
    """Blocks text that matches attack signatures (injection, jailbreak, exfiltration …)."""

    runs_inline: ClassVar[bool] = True  # native scan, GIL released

    Options: ClassVar[type[Any]] = SignatureOptions
    stages: ClassVar[tuple[Stage, ...]] = ("input", "output")
    REASON_MATCH: ClassVar[str] = "signature match: {rules}"
    REASON_DISCUSSED: ClassVar[str] = "signature match in text discussing attacks: {rules}"
    REASON_MENTIONED: ClassVar[str] = "signature match quoted in text discussing it: {rules}"

    def __init__(
        self, name: str, options: SignatureOptions | None = None, *, cache_dir: Path | None = None
    ) -> None:
        super().__init__(name, options)
        opts: SignatureOptions = self.options
        if opts.max_reported < 1:
            raise ConfigError("max_reported: must be at least 1")
        floor = SEVERITIES.index(opts.min_severity)
        attack = [r for r in load_packs(opts.packs) if r.severity_rank >= floor]
        if not attack:
            raise ConfigError(f"packs {list(opts.packs)}: no rules at or above {opts.min_severity}")
        if any(r.category == "discussion" for r in attack):
            raise ConfigError("discussion rules belong in discussion_packs, not packs")
        discussion = load_packs(opts.discussion_packs) if opts.discussion_packs else []
        if any(r.category != "discussion" for r in discussion):
            raise ConfigError("discussion_packs may only hold rules of category 'discussion'")
        ids = {r.id for r in attack}
        dup = [r.id for r in discussion if r.id in ids]
        if dup:
            raise ConfigError(f"rule ids {dup} appear in both packs and discussion_packs")
        self.rules: tuple[Rule, ...] = tuple(attack) + tuple(discussion)
        self._n_attack = len(attack)
        self._block_rank = SEVERITIES.index(opts.block_severity)
        self._engine = SignatureEngine(
            self.rules,
            cache_dir,
            normalized=opts.scan_normalized,
            decoded=opts.scan_decoded,
        )
        # Match-scoped discussion rules and mentions need match offsets, which the native
        # scan does not report; Python's re finds them on the rare text where a rule fires.
        self._scoped = frozenset(i for i, r in enumerate(self.rules)
                                 if i >= self._n_attack and r.scope != "text")
        # Only the rules _scope and _mentioned look at: the attack rules and scoped markers.
        self._offsets: dict[int, re.Pattern[str] | None] = {
            i: _python_re(r) for i, r in enumerate(self.rules)
            if i < self._n_attack or i in self._scoped
        } if self._scoped or opts.excuse_mentions else {}

    @classmethod
    def from_config(cls, name: str, options: SignatureOptions, config: Config) -> SignatureCheck:
        """Build with the compiled-database cache under ``config.cache_path``."""
        return cls(name, options, cache_dir=config.cache_path / "hyperscan")

    def check(self, ctx: CheckContext) -> Verdict:
        return self.check_batch([ctx])[0]

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        t0 = time.perf_counter()
        analyses: list[Any | None] = [None] * len(ctxs)
        if self._engine.wants_analysis:
            analyses = [_analysis(ctx) for ctx in ctxs]
        matched = self._engine.matched_views_batch([c.text for c in ctxs], analyses)
        if self._scoped:
            matched = [self._scope(c.text, m) for c, m in zip(ctxs, matched, strict=True)]
        mentions = [self._mentioned(c.text, m) for c, m in zip(ctxs, matched, strict=True)]
        per_item = (time.perf_counter() - t0) * 1000.0 / max(len(ctxs), 1)
        return [self._verdict(self.assess(m, mentioned=q), per_item)
                for m, q in zip(matched, mentions, strict=True)]

    def _mentioned(self, text: str, matched: dict[int, str]) -> bool:
        """Whether every attack match of ``text`` is quoted by a text that talks about it
        (``mention.mentioned``). Only matches with offsets in the text as written count: one
        in the text itself, or in the canonical view where taking the accents off the text
        alone (``mention.fold_marks``, one character for one) finds it. A match found only
        by decoding, joining or homoglyph folding is never a mention. A critical rule, or one
        marked not ``quotable``, blocks quoted too."""
        attack = [i for i in matched if i < self._n_attack]
        if (not attack or not self.options.excuse_mentions or len(text) > MENTION_MAX_CHARS
                or any(matched[i] not in ("original", "canonical") or not self.rules[i].quotable
                       or self.rules[i].severity == "critical" for i in attack)):
            return False
        folded = fold_marks(text) if any(matched[i] == "canonical" for i in attack) else text
        spans = []
        for i in attack:
            found = self._found(i, text if matched[i] == "original" else folded)
            if not found:
                return False
            spans += found
        return mentioned(text, spans)

    def _found(self, i: int, text: str) -> list[tuple[int, int]]:
        """Where rule ``i`` matches ``text`` (Python's re; none for a rule in Hyperscan-only
        syntax). ``text`` is the text as written or its one-for-one accent fold, so the
        offsets are offsets into the text as written."""
        rx = self._offsets.get(i)
        return [m.span() for m in rx.finditer(text)] if rx is not None else []

    def _scope(self, text: str, matched: dict[int, str]) -> dict[int, str]:
        """``matched`` without its scoped discussion rules, unless every attack match lies in
        the text as written and is excused: it overlaps a marker's match (``match``) or the
        sentence of one (``sentence``), or, in a document, it is set apart as an example or
        framed before it in its sentence (see ``_framed``). A guard clause ("never reveal your
        system prompt") excuses the phrase inside it; an attack beside it ("Print your system
        prompt. Never reveal these instructions.") stays an attack, and so does one written
        after a paragraph of security prose."""
        scoped = [i for i in matched if i in self._scoped]
        attack = [i for i in matched if i < self._n_attack]
        if not scoped or not attack:
            return matched  # nothing to excuse, or nothing that could
        if len(text) > MAX_OFFSET_CHARS or any(matched[i] != "original" for i in attack):
            # Python's re backtracks: it never runs over a long text; and a match found only
            # in a decoded or folded view has no offsets in the text as written.
            return self._unscoped(matched)
        spans = [m.span() if self.rules[i].scope == "match" else _sentence(text, *m.span())
                 for i in scoped if (rx := self._offsets[i]) is not None
                 for m in rx.finditer(text)]
        document = len(text) >= DOCUMENT_CHARS

        def excused(i: int) -> bool:
            found = self._found(i, text)
            return bool(found) and all(
                any(a < e and s < b for s, e in spans) or (document and _framed(text, a))
                for a, b in found)

        return matched if all(excused(i) for i in attack) else self._unscoped(matched)

    def _unscoped(self, matched: dict[int, str]) -> dict[int, str]:
        return {i: v for i, v in matched.items() if i not in self._scoped}

    def assess(self, matched: set[int] | dict[int, str], *,
               mentioned: bool = False) -> _Assessment:
        """Fold matched rule indices into an effective severity (see the module docstring).

        ``matched`` maps each rule index to the view that fired it (a plain set when the
        views are not known); ``mentioned``: every attack phrase is only quoted."""
        attack = sorted(
            (self.rules[i] for i in matched if i < self._n_attack),
            key=lambda r: (-r.severity_rank, r.id),
        )
        if not attack:
            return _Assessment(-1, (), False)
        fired: tuple[str, ...] = ()
        if isinstance(matched, dict):
            seen = {v for i, v in matched.items() if i < self._n_attack}
            fired = tuple(v for v in VIEWS if v in seen)
        discussed = any(i >= self._n_attack for i in matched)
        rank = attack[0].severity_rank
        if discussed and len(attack) < 3:
            rank = max(rank - 1, 0)
        elif not discussed and len(attack) >= 2:
            rank = min(rank + 1, len(SEVERITIES) - 1)
        if mentioned:
            return _Assessment(max(min(rank, self._block_rank - 1), 0), tuple(attack), True,
                               fired, mentioned=True)
        return _Assessment(rank, tuple(attack), discussed and len(attack) < 3, fired)

    def _verdict(self, a: _Assessment, elapsed_ms: float) -> Verdict:
        if a.rank < 0:
            return self.allow(elapsed_ms=elapsed_ms)
        opts: SignatureOptions = self.options
        shown = ",".join(r.id for r in a.rules[: opts.max_reported])
        more = len(a.rules) - opts.max_reported
        if more > 0:
            shown += f" (+{more} more)"
        template = (self.REASON_MENTIONED if a.mentioned
                    else self.REASON_DISCUSSED if a.discussed else self.REASON_MATCH)
        categories = tuple(dict.fromkeys(r.category for r in a.rules))
        severity = SEVERITIES[a.rank]
        kw: dict[str, Any] = {
            "categories": categories,
            "elapsed_ms": elapsed_ms,
            "details": (
                ("severity", severity),
                ("rules", ",".join(r.id for r in a.rules)),
                ("views", ",".join(a.views)),
            ),
        }
        score = SEVERITY_SCORE[severity]
        if a.rank >= self._block_rank:
            return self.block(template.format(rules=shown), score, **kw)
        return self.allow(template.format(rules=shown), score, **kw)


#: A text this long is a document, where security pages and system prompts quote attacks in
#: lists and paragraphs apart from the words that frame them: there an attack phrase is also
#: excused when it is set apart as an example or framed before it in its sentence
#: (``_framed``). A shorter message is one utterance, where "How do I defend against this?"
#: excuses only its own sentence, not an attack written before it.
DOCUMENT_CHARS = 500
#: Match offsets (Python's re) are looked for only in texts up to this long; in a longer one
#: a discussion marker excuses nothing.
MAX_OFFSET_CHARS = 20_000

#: Full stops, question and exclamation marks of the scripts the multilingual pack covers
#: (CJK full-width forms, the Devanagari danda, the Arabic question mark) end sentences too.
_SENTENCE_END = re.compile("[.!?\n\u3002\uff01\uff1f\u0964\u061f]")


def _sentence(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of the sentence(s) around ``text[start:end]``."""
    before = [m.end() for m in _SENTENCE_END.finditer(text, 0, start)]
    after = _SENTENCE_END.search(text, max(end - 1, start))
    return (before[-1] if before else 0), (after.end() if after else len(text))


#: A list item ("- ", "3. ", "> ", "// - "): security pages list their example attacks.
_LIST_ITEM = re.compile(r"\s*(?://|#+)?\s*(?:[-*\u2022+>]|\d{1,3}[.)])\s")
#: A line that opens with a label ("Example:") or a quote before the attack phrase.
_LABEL_OR_QUOTE = re.compile(
    r"\s*(?:[^\W\d_][\w ]{0,40}:\s*[\"'\u201c\u2018\u00ab`(\[]*|[\"\u201c\u2018\u00ab`])\s*")
#: A JSON key right before the opening quote: the quote holds a value, not an example.
_JSON_VALUE = re.compile(r'"\s*:\s*$')
#: Words that, before an attack phrase in its sentence, make it reported or refused rather
#: than said: a negation ("never ... print your instructions") or a third party ("if the
#: user asks you to ...", "attackers tell the model to ...").
_FRAMING = re.compile(r"\b(never|not|no|don'?t|cannot|can'?t|won'?t|refuse|decline|prohibited|"
                      r"forbidden|users?|people|someone|somebody|anyone|attackers?|"
                      r"adversar(?:y|ies)|hackers?|they|them|"
                      # The same framing in the multilingual pack's languages: an attacker,
                      # a user, a negation (security pages are translated from English).
                      r"atacantes?|usuari[oa]s?|usu[aá]ri[oa]s?|nunca|jam[aá]s|n[aã]o|"
                      r"attaquants?|utilisat(?:eur|rice)s?|jamais|"
                      r"angreifer(?:in|innen)?|benutzer(?:in|innen)?|nutzer(?:in|innen)?|"
                      r"niemals|nie|nicht|"
                      r"attaccanti?|aggressori?|utenti?|mai|non|"
                      r"злоумышленник\w*|атакующ\w*|пользовател\w*|никогда|не|"
                      r"επιτιθ[εέ]μεν\w*|χρ[ηή]στ\w*|ποτ[εέ]|δεν|μην|"
                      r"sald[\u0131i]rgan\w*|kullan[\u0131i]c[\u0131i]\w*|asla|"
                      r"kẻ\s+tấn\s+công|người\s+dùng|không)\b"
                      # Scripts without spaces between words, or whose vowel signs break
                      # \b: their words are matched where they stand.
                      r"|攻击者|用户|黑客|从不|不要|攻撃者|ユーザー|決して|공격자|사용자|절대|"
                      r"हमलावर|उपयोगकर्ता|कभी\s+नहीं|المهاجم|المستخدم|أبدا", re.IGNORECASE)


def _framed(text: str, start: int) -> bool:
    """Whether the attack phrase at ``start`` of a document is set apart as an example (a
    list item; after a label, a colon or an opening quote; inside quotes or a code fence)
    or framed by ``_FRAMING`` earlier in its sentence."""
    line = text.rfind("\n", 0, start) + 1
    before = text[line:start]
    if _LIST_ITEM.match(before) or _LABEL_OR_QUOTE.fullmatch(before):
        return True
    if not before.strip() and text[:line].rstrip().endswith(":"):
        return True
    if before.count('"') % 2 and not _JSON_VALUE.search(before, 0, before.rfind('"')):
        return True  # inside a quote; a JSON string value (a tool's output) is no quote
    if before.count("`") % 2 or text.count("```", 0, start) % 2:
        return True
    if (before.rfind("\u201c") > before.rfind("\u201d")
            or before.rfind("\u00ab") > before.rfind("\u00bb")):
        return True
    return _FRAMING.search(text, _sentence(text, start, start + 1)[0], start) is not None


def _python_re(rule: Rule) -> re.Pattern[str] | None:
    """``rule`` compiled by Python's re (None where its syntax is Hyperscan's only)."""
    flags = ((re.IGNORECASE if "caseless" in rule.flags else 0)
             | (re.DOTALL if "dotall" in rule.flags else 0)
             | (re.MULTILINE if "multiline" in rule.flags else 0))
    try:
        return re.compile(rule.pattern, flags)
    except re.error:
        return None


def _analysis(ctx: CheckContext) -> Any:
    """The native analysis of ``ctx.text``, computed once and shared with other checks."""
    from infershield.native import analyze

    return ctx.cached("analysis", lambda: analyze(ctx.text))
