"""``classifier``: an ONNX sequence classifier that scores every token window of the text (or
of the view that says what the text says), and each of its sentence units."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from infershield.checks.base import Check, CheckContext, Stage
from infershield.checks.input.content import UNIT_MIN_WORDS, content, sentence_units
from infershield.config import Config, bounded, check_bounds
from infershield.detectors.remote import DetectorUnavailable
from infershield.errors import ConfigError, LimitExceeded
from infershield.telemetry.instrument import detector_span
from infershield.verdict import Decision, Status, Verdict

if TYPE_CHECKING:
    from infershield.detectors.remote import TritonModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClassifierTritonOptions:
    """Where ``backend: triton`` runs the model (``classifier.triton`` in a policy).

    The model is the one ``infershield models export-triton`` writes into a Triton model
    repository; the firewall keeps the tokenizer and labels of the same model locally.
    """

    #: ``HOST:PORT`` of Triton's gRPC endpoint; empty = ``backend.upstream``.
    url: str = ""
    #: The model's name in Triton's repository (export-triton's ``--model``).
    model: str = "injection-minilm"
    #: Model version; empty = Triton's version policy decides.
    version: str = ""
    #: Per-call timeout; a detector that does not answer in time blocks the request.
    timeout_s: float = bounded(5.0, gt=0.0)
    #: ``auto`` = use ``backend.tls`` when ``url`` is the upstream's (empty or the same
    #: address); ``on`` = always use ``backend.tls``; ``off`` = plaintext.
    tls: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass(frozen=True, kw_only=True)
class ClassifierOptions:
    """Options of :class:`ClassifierCheck`.

    ``model`` is a directory (model.onnx + tokenizer.json + config.json) or the name of a model
    under ``<cache>/models``; empty means the shipped injection/jailbreak model.
    """

    model: str = ""
    #: Where the forward pass runs: ``local`` (onnxruntime in this process) or ``triton``
    #: (the model served by a Triton server, see ``triton``). Tokenising, windowing, the
    #: prefilter cascade (which stays local) and the threshold are the same either way.
    backend: Literal["local", "triton"] = "local"
    triton: ClassifierTritonOptions = field(default_factory=ClassifierTritonOptions)
    #: Block at or above this attack probability; ``None`` = the model's recommended value.
    threshold: float | None = bounded(None, gt=0.0, le=1.0)
    attack_labels: tuple[str, ...] = ()
    providers: tuple[str, ...] = ("auto",)
    #: On the CUDA EP, run the float16 twin of the model (fused kernels, built on first use;
    #: scores within 0.006 of float32 in bench/gpu_check). No effect on the CPU.
    fp16: bool = True
    max_batch: int = bounded(32, ge=1)
    #: 0 = never wait: batch whatever queued up during the last forward pass.
    max_wait_ms: float = bounded(0.0, ge=0.0)
    io_binding: bool = True
    window: int = bounded(0, ge=0)
    stride: int = bounded(0, ge=0)
    max_windows: int = bounded(64, ge=1)
    threads: int = bounded(0, ge=0)
    #: A fast model that screens first: a window it scores below ``prefilter_clear`` is
    #: cleared without running ``model``; every other window is scored by ``model`` as usual.
    #: "auto" = the shipped two-layer pruned int8 model, when ``model`` is the shipped one and
    #: runs on the CPU EP (on a GPU the main model is fast enough alone); "none" = off; else a
    #: model directory or a name under ``<cache>/models``.
    prefilter: str = "auto"
    #: The prefilter's clearing cut; ``None`` = the fast model's recommended ``clear_below``.
    prefilter_clear: float | None = bounded(None, ge=0.0, le=1.0)
    #: Screen a window longer than this many tokens by its pieces of this size (any piece at
    #: or above ``prefilter_piece_clear`` sends the window to ``model``), so that padding
    #: cannot dilute an attack below the small model's cut; ``None`` = the fast model's
    #: recommended ``piece_tokens`` (none: whole windows), 0 = whole windows.
    prefilter_pieces: int | None = bounded(None, ge=0)
    #: The cut for pieces; ``None`` = the fast model's ``piece_clear_below``, else
    #: ``prefilter_clear``.
    prefilter_piece_clear: float | None = bounded(None, ge=0.0, le=1.0)
    #: Also judge windows sentence by sentence (with pieces on): a window goes to ``model``
    #: when one of its sentences reaches ``prefilter_sentence_clear``, so that a benign
    #: lead-in cannot hide an attack sentence from the small model.
    prefilter_sentences: bool = True
    #: The cut for sentences; ``None`` = the fast model's ``sentence_clear_below`` (the
    #: shipped one recommends 0.8; a model that recommends none screens no sentences).
    prefilter_sentence_clear: float | None = bounded(None, ge=0.0, le=1.0)
    #: Which windows are judged by their sentences: ``short`` (windows of at most a piece,
    #: where it costs one more short pass of the small model) or ``all`` (long windows too:
    #: held-out red-team padding bypass 24.8% -> 18.8% in one measurement, but about twice
    #: the everyday 256-token p50, 5.5 -> 10.4 ms on a 2-vCPU VM; see the models README).
    prefilter_sentence_scope: Literal["short", "all"] = "short"
    #: What to do when the shipped model is not in the cache yet.
    on_missing_model: Literal["build", "error"] = "build"
    #: Judge the native normaliser's canonical view of the text (confusables, full-width and
    #: leetspeak folded, spelled-out letters joined, invisibles stripped, blobs decoded …)
    #: when it differs from the text beyond case and spacing: content, not form. The model
    #: scores the odd form itself as an attack (spaced-out benign text: 28 of 40 blocked
    #: raw, 2 of 40 on its canonical view), while a disguised attack reads as an attack in
    #: the canonical view. The verdict's ``view`` detail says which view was judged, and
    #: ``original_score`` keeps the raw text's score for the audit log.
    canonical: bool = True
    #: Judge a text that is one JSON document, or an HTML page, by its content (its string
    #: values; the page's text): the model scores the syntax of a JSON request or a page as
    #: suspicious whatever it carries, while an attack inside still reads as an attack. The
    #: verdict's ``view`` is then ``content``. What the page hides from its reader (comments,
    #: the prose of attributes, hidden elements) is also scored on its own, at the text's
    #: threshold, so the page's visible text cannot dilute it.
    content: bool = True
    #: Judge decoded content on its own: the text of each readable base64, hex or URL blob
    #: (and the segment that ROT13 or reversal decoding changed) is scored as a text of its
    #: own, at the text's threshold, besides the canonical view that decodes it in place.
    #: What was hidden is judged by what it says and cannot be diluted by the words around
    #: it ("Reference data for the ticket: <base64 of an attack>"), while an innocent
    #: encoded text scores as it would in clear. Costs nothing when the text has no blob.
    decoded: bool = True
    #: Judge a task frame's payload on its own: in a text of the form "<task>: <payload>"
    #: (a lead of at most 200 characters on one line, then a colon and at least four words;
    #: texts up to 2,000 characters), the payload is also scored as a text of its own, at the
    #: text's threshold. A framing task ("Translate the following sentence into French: …",
    #: "Write a poem that begins with this line: …") or a tool's record key cannot dilute an
    #: attack then, while a benign payload scores as it would alone. Held-out red team:
    #: bypass 10.9% -> 9.0% (frames 21.2% -> 7.7%), benign battery 6 -> 8 of 1,680.
    frames: bool = True
    #: Localised scoring: when the judged view has two sentence units or more (sentences and
    #: lines of at least four words), each unit is also scored on its own, so benign padding
    #: around an attack cannot dilute it; one unit at or above ``unit_threshold`` blocks.
    #: Off by default: with the shipped head it cut held-out red-team bypass from 16.3% to
    #: 3.5% but more than doubled the false positives on unseen benign sources (single
    #: instruction-like sentences of system prompts and security docs score as attacks).
    units: bool = False
    #: The cut for one unit; ``None`` = the model's recommended ``unit_threshold``, else the
    #: threshold made ``UNIT_ODDS`` (2.5) times stricter in odds (a unit is judged without context,
    #: so it needs more evidence than the whole text).
    unit_threshold: float | None = bounded(None, gt=0.0, le=1.0)

    def __post_init__(self) -> None:
        check_bounds(self)


class ClassifierCheck(Check):
    """Blocks text whose attack probability (max over windows) reaches the threshold."""

    Options = ClassifierOptions
    stages: ClassVar[tuple[Stage, ...]] = ("input", "output")
    runs_inline: ClassVar[bool] = False  # a forward pass: never on the event loop
    REASON_ATTACK = "classifier: attack probability {score:.3f} >= {threshold:.3f}"
    REASON_UNIT = ("classifier: attack probability {score:.3f} >= {threshold:.3f} "
                   "in sentence unit {unit} of {units}")
    REASON_DECODED = ("classifier: attack probability {score:.3f} >= {threshold:.3f} "
                      "in decoded content ({kind})")
    REASON_HIDDEN = ("classifier: attack probability {score:.3f} >= {threshold:.3f} "
                     "in hidden page text ({kind})")
    REASON_FRAMED = ("classifier: attack probability {score:.3f} >= {threshold:.3f} "
                     "in the payload of a task frame")
    REASON_TOO_LONG = "classifier: text exceeds the window limit"
    REASON_UNAVAILABLE = "classifier: detector unavailable, blocked (fail closed): {error}"

    def __init__(self, name: str, options: ClassifierOptions, model_dir: Path,
                 prefilter_dir: Path | None = None, *, remote: TritonModel | None = None
                 ) -> None:
        from infershield.detectors.runtime import (
            Cascade,
            MicroBatcher,
            RuntimeOptions,
            SequenceClassifier,
            WindowScorer,
        )

        super().__init__(name, options)
        o = options
        runtime = RuntimeOptions(
            attack_labels=o.attack_labels, providers=o.providers, fp16=o.fp16,
            window=o.window, stride=o.stride, max_windows=o.max_windows,
            intra_op_threads=o.threads, max_batch=o.max_batch, io_binding=o.io_binding,
            # Two local sessions must not spin on each other (a remote model has none).
            allow_spinning=prefilter_dir is None or remote is not None,
        )
        self.remote = remote
        self.model = SequenceClassifier(model_dir, runtime, remote=remote)
        recommended = float(self.model.meta.get("threshold", 0.5))
        self.threshold = o.threshold if o.threshold is not None else recommended
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")
        self.unit_threshold = _unit_threshold(o.unit_threshold, self.model.meta, self.threshold)
        self.categories = tuple(dict.fromkeys(
            "jailbreak" if "jailbreak" in lab.lower() else "injection"
            for lab in self.model.attack_labels
        ))
        #: What scores texts: the model, or the prefilter cascade in front of it.
        self.scorer: WindowScorer = self.model
        self.cascade: Cascade | None = None
        if prefilter_dir is not None:
            # The fast model names its own labels; only the window follows the main model.
            fast = SequenceClassifier(prefilter_dir, replace(runtime, attack_labels=()))
            self.cascade = Cascade.from_meta(
                fast, self.model, clear_below=o.prefilter_clear,
                piece_tokens=o.prefilter_pieces, piece_clear=o.prefilter_piece_clear,
                sentences=o.prefilter_sentences, sentence_clear=o.prefilter_sentence_clear,
                sentence_scope=o.prefilter_sentence_scope)
            for what, cut in (("prefilter_clear", self.cascade.clear_below),
                              ("prefilter_piece_clear", self.cascade.piece_clear),
                              ("prefilter_sentence_clear", self.cascade.sentence_clear or 0.0)):
                if cut > self.threshold:
                    raise ConfigError(f"{what} {cut} must be in [0, threshold {self.threshold}]")
            self.scorer = self.cascade
        self.batcher = MicroBatcher(self.scorer, max_batch=o.max_batch,
                                    max_wait_ms=o.max_wait_ms)

    @classmethod
    def from_config(cls, name: str, options: ClassifierOptions, config: Config) -> ClassifierCheck:
        """Resolve ``options.model`` against the cache (building the shipped model if allowed)."""
        from infershield.detectors.models import FAST_MODEL, ensure_shipped_model
        from infershield.detectors.runtime import cuda_expected

        build = options.on_missing_model == "build"
        # The offloaded model runs on Triton's device; the local prefilter is on this host's.
        on_gpu = options.backend == "local" and cuda_expected(options.providers)
        if not options.model:
            model_dir = ensure_shipped_model(
                config.cache_path, build=build, fp16=options.fp16 and on_gpu)
        else:
            model_dir = _model_dir(options.model, config)
        prefilter_dir = None
        if options.prefilter == "auto":
            if not options.model and not on_gpu:
                prefilter_dir = ensure_shipped_model(config.cache_path, build=build,
                                                     name=FAST_MODEL)
        elif options.prefilter == FAST_MODEL:
            prefilter_dir = ensure_shipped_model(config.cache_path, build=build, name=FAST_MODEL)
        elif options.prefilter not in ("", "none"):
            prefilter_dir = _model_dir(options.prefilter, config)
        remote = _remote_model(options, config) if options.backend == "triton" else None
        try:
            return cls(name, options, model_dir, prefilter_dir, remote=remote)
        except BaseException:
            if remote is not None:
                remote.close()
            raise

    def _plan(self, ctx: CheckContext) -> _Plan:
        """The texts to score for ``ctx``: the text itself, the view judged in its place (if
        any) and the units of that view (if localised scoring applies)."""
        o = self.options
        view, judged = "original", ctx.text
        hidden: tuple[tuple[str, str], ...] = ()
        if o.content:
            # Structure first, while its lines are still there; then fold what is left.
            inner = content(ctx.text)
            hidden = inner.hidden
            if inner.text.strip() and _squash(inner.text) != _squash(ctx.text):
                view, judged = "content", inner.text
        # Units are cut before folding (the canonical view joins lines), then folded each.
        units = sentence_units(judged) if o.units else []
        if len(units) < 2:
            units = []  # one unit is the whole view, already scored
        if o.canonical:
            from infershield.native import analysis_for, normalize

            norm = normalize(judged) if view == "content" else analysis_for(ctx).normalized
            # Case and spacing alone do not count: the tokenizer ignores them.
            if norm.strip() and norm != _squash(judged):
                judged = norm
                if view == "original":
                    view = "canonical"
            units = [u for u in (normalize(u) for u in units) if u.strip()]
        texts = [ctx.text] if view == "original" else [ctx.text, judged]
        parts = _decoded_parts(ctx, judged) if o.decoded else []
        parts += _hidden_parts(hidden, judged, {_squash(t) for _, t in parts})
        if o.frames:
            parts += _frame_part(judged, {_squash(t) for _, t in parts})
        return _Plan(view, texts + [t for _, t in parts] + units, len(texts),
                     tuple(k for k, _ in parts))

    def _decide(self, plan: _Plan, scores: Sequence[float | None]) -> Verdict:
        """The verdict from the plan's scores (None: a text too long to score)."""
        if any(s is None for s in scores):
            return self._too_long()
        own = float(scores[0] or 0.0)
        score = float(scores[plan.n_views - 1] or 0.0)
        cut = plan.n_views + len(plan.decoded)
        decoded = [float(s or 0.0) for s in scores[plan.n_views:cut]]
        units = [float(s or 0.0) for s in scores[cut:]]
        parts = list(zip(plan.decoded, decoded, strict=True))
        return self._verdict(own, score if plan.view != "original" else None,
                             view=plan.view, units=units,
                             decoded=[p for p in parts if p[0] not in HIDDEN_KINDS | {FRAME}],
                             hidden=[p for p in parts if p[0] in HIDDEN_KINDS],
                             framed=[p for p in parts if p[0] == FRAME])

    def _verdict(self, score: float, judged: float | None = None, *, view: str = "canonical",
                 units: Sequence[float] = (),
                 decoded: Sequence[tuple[str, float]] = (),
                 hidden: Sequence[tuple[str, float]] = (),
                 framed: Sequence[tuple[str, float]] = ()) -> Verdict:
        """Block when the judged view's score reaches the threshold, a decoded part's, a
        hidden part's or a frame's payload's (``(kind, score)`` pairs) does, or one unit's
        reaches the (stricter) unit threshold.
        ``judged`` is the score of the view judged in place of the text itself (content, not
        form); None when the text is judged as written."""
        details: list[tuple[str, str]] = []
        if judged is not None:
            details += [("view", view), ("original_score", f"{score:.3f}")]
            score = judged
        else:
            view = "original"
        score = min(max(score, 0.0), 1.0)
        # What was decoded, what a page hides, a task frame's payload: each judged on its
        # own at the threshold.
        for parts, key, template in ((decoded, "decoded", self.REASON_DECODED),
                                     (hidden, "hidden", self.REASON_HIDDEN),
                                     (framed, "framed", self.REASON_FRAMED)):
            if not parts:
                continue
            kind, best_part = max(parts, key=lambda d: d[1])
            best_part = min(max(best_part, 0.0), 1.0)
            details.append((f"{key}_score", f"{best_part:.3f}"))
            if best_part >= self.threshold and score < self.threshold:
                details.append((key, kind))
                reason = template.format(score=best_part, threshold=self.threshold, kind=kind)
                return self.block(reason, best_part, categories=self.categories,
                                  details=tuple(details))
        unit_hit = -1
        if units:
            best = max(range(len(units)), key=units.__getitem__)
            details.append(("unit_score", f"{units[best]:.3f}"))
            if units[best] >= self.unit_threshold and score < self.threshold:
                unit_hit, score = best, min(max(units[best], 0.0), 1.0)
                details.append(("unit", str(best)))
        if unit_hit >= 0:
            reason = self.REASON_UNIT.format(score=score, threshold=self.unit_threshold,
                                             unit=unit_hit + 1, units=len(units))
            if view != "original":
                reason += f" ({view} view)"
            return self.block(reason, score, categories=self.categories,
                              details=tuple(details))
        if score >= self.threshold:
            reason = self.REASON_ATTACK.format(score=score, threshold=self.threshold)
            if view != "original":
                reason += f" ({view} view)"
            return self.block(reason, score, categories=self.categories,
                              details=tuple(details) or (("view", view),))
        return self.allow(score=score, details=tuple(details))

    def _unavailable(self, exc: Exception) -> Verdict:
        # Fail closed: a detector that cannot answer blocks, and the verdict says why.
        return Verdict(self.name, Decision.BLOCK, Status.ERROR, 1.0,
                       self.REASON_UNAVAILABLE.format(error=exc), categories=self.categories)

    def _too_long(self) -> Verdict:
        # Fail closed: text we cannot fully score is never waved through.
        return self.block(self.REASON_TOO_LONG, 1.0, categories=self.categories)

    def check(self, ctx: CheckContext) -> Verdict:
        plan = self._plan(ctx)
        try:
            if len(plan.texts) == 1:
                return self._decide(plan, [self.batcher.score(ctx.text)])
            return self._decide(plan, self.batcher.score_each(plan.texts))
        except LimitExceeded:
            return self._too_long()
        except DetectorUnavailable as exc:
            return self._unavailable(exc)

    async def acheck(self, ctx: CheckContext) -> Verdict:
        """Event-loop friendly: awaits the batcher's futures instead of blocking the loop."""
        plan = self._plan(ctx)
        try:
            futures = [self.batcher.submit(t) for t in plan.texts]
            scores = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except LimitExceeded:
            return self._too_long()
        except DetectorUnavailable as exc:
            return self._unavailable(exc)
        return self._decide(plan, scores)

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        # A batch already is a batch: every text of every plan (views, units) is scored in
        # one pass, windows sorted by length.
        plans = [self._plan(ctx) for ctx in ctxs]
        texts = [t for p in plans for t in p.texts]
        per_text = [None if isinstance(w, LimitExceeded) else w
                    for w in self.scorer.windows_each(texts)]
        ok = [w for w in per_text if w is not None]
        scored: Iterator[float] = iter(())
        if ok:
            try:
                with detector_span(self.model.model_dir.name, len(ok)):
                    scored = iter(self.scorer.score_windows(ok).tolist())
            except DetectorUnavailable as exc:
                return [self._unavailable(exc) for _ in ctxs]
        scores = iter([None if w is None else next(scored) for w in per_text])
        return [self._decide(p, [next(scores) for _ in p.texts]) for p in plans]

    def close(self) -> None:
        self.batcher.close()
        if self.remote is not None:
            self.remote.close()


def _remote_model(options: ClassifierOptions, config: Config) -> TritonModel:
    """The Triton model ``backend: triton`` runs; the URL defaults to the upstream's."""
    from infershield.backends.triton import parse_upstream
    from infershield.detectors.remote import TritonModel

    t = options.triton
    url = t.url or config.backend.upstream
    if not url:
        raise ConfigError(
            "classifier.triton.url: backend triton needs a Triton address (or backend.upstream)")
    same = not t.url or (bool(config.backend.upstream)
                         and parse_upstream(t.url) == parse_upstream(config.backend.upstream))
    tls = config.backend.tls if t.tls == "on" or (t.tls == "auto" and same) else None
    return TritonModel(url, t.model, version=t.version, timeout_s=t.timeout_s, tls=tls,
                       max_message_bytes=config.server.max_message_bytes)


#: How much stricter (in odds) a unit's cut is than the text's when neither the options nor the
#: model name one: 0.95 (odds 19) becomes 0.979 (odds 47.5).
UNIT_ODDS = 2.5


def _unit_threshold(option: float | None, meta: dict[str, Any], threshold: float) -> float:
    """The unit cut: the option, the model's ``unit_threshold``, or the threshold's odds times
    :data:`UNIT_ODDS`; never below the text's own threshold."""
    if option is not None:
        cut = option
    elif "unit_threshold" in meta:
        try:
            cut = float(meta["unit_threshold"])
        except (TypeError, ValueError):
            raise ConfigError(f"model unit_threshold {meta['unit_threshold']!r} is not a "
                              "number") from None
    elif threshold >= 1.0:
        cut = 1.0
    else:
        odds = threshold / (1.0 - threshold) * UNIT_ODDS
        cut = odds / (1.0 + odds)
    if not threshold <= cut <= 1.0:
        raise ConfigError(f"unit_threshold {cut} must be in [threshold {threshold}, 1]")
    return cut


#: At most this many decoded parts are scored per text (each is a forward pass).
MAX_DECODED_PARTS = 8
#: At most this many hidden parts of a page are scored on their own; past that, the rest are
#: joined into the last one (still judged, never dropped).
MAX_HIDDEN_PARTS = 16
#: The kinds of hidden page text (:attr:`infershield.checks.input.content.Content.hidden`).
HIDDEN_KINDS = frozenset({"html_comment", "html_attribute", "html_hidden"})
#: Decoding transforms that rewrite a segment in place without reporting where it was.
_SEGMENT_DECODERS = ("rot13", "reversed")


def _decoded_parts(ctx: CheckContext, judged: str) -> list[tuple[str, str]]:
    """``(kind, text)`` of what the native analysis decoded from ``ctx.text``, each folded
    like the canonical view: readable blobs, and the segment that ROT13 or reversal
    decoding changed. Parts under :data:`UNIT_MIN_WORDS` words, or that are the judged view
    itself (already scored), are left out."""
    from infershield.native import analysis_for, normalize

    a = analysis_for(ctx)
    found: list[tuple[str, str]] = [(b.kind, b.decoded) for b in a.blobs if b.decoded.strip()]
    seg = [t for t in a.transforms if t in _SEGMENT_DECODERS]
    if seg:
        found.append((seg[0], _changed_segment(_squash(ctx.text), a.normalized)))
    seen = {_squash(judged)}
    out: list[tuple[str, str]] = []
    for kind, raw in found:
        part = normalize(raw) if kind not in _SEGMENT_DECODERS else raw
        key = _squash(part)
        if len(key.split()) < UNIT_MIN_WORDS or key in seen:
            continue
        seen.add(key)
        out.append((kind, part))
        if len(out) == MAX_DECODED_PARTS:
            break
    return out


#: The kind of a task frame's payload part (``details.framed``).
FRAME = "frame"
#: Frames are looked for in texts up to this long: a task with its payload, not a document.
FRAME_MAX_CHARS = 2000
#: "<lead>: <payload>": a lead of at most 200 characters on one line, then a colon.
_FRAME = re.compile(r"[^\n:]{3,200}?:\s*(?P<payload>\S.*)", re.DOTALL)


def _frame_part(judged: str, seen: set[str]) -> list[tuple[str, str]]:
    """``[(FRAME, payload)]`` when ``judged`` is a task lead, a colon and a payload of at
    least :data:`UNIT_MIN_WORDS` words (none when the text is longer than
    :data:`FRAME_MAX_CHARS`, or the payload is already scored)."""
    if len(judged) > FRAME_MAX_CHARS:
        return []
    m = _FRAME.match(judged.strip())
    if m is None:
        return []
    payload = m.group("payload").strip()
    if len(payload.split()) < UNIT_MIN_WORDS or _squash(payload) in seen | {_squash(judged)}:
        return []
    return [(FRAME, payload)]


def _hidden_parts(hidden: Sequence[tuple[str, str]], judged: str,
                  seen: set[str]) -> list[tuple[str, str]]:
    """``(kind, text)`` of a page's hidden parts, folded like the canonical view; those that
    are the judged view itself or a decoded part (already scored) are left out, and past
    :data:`MAX_HIDDEN_PARTS` the rest are joined into the last."""
    if not hidden:
        return []
    from infershield.native import normalize

    seen = seen | {_squash(judged)}
    out: list[tuple[str, str]] = []
    for kind, raw in hidden:
        part = normalize(raw)
        key = _squash(part)
        if key in seen or not key:
            continue
        seen.add(key)
        out.append((kind, part))
    if len(out) > MAX_HIDDEN_PARTS:
        rest = out[MAX_HIDDEN_PARTS - 1:]
        out[MAX_HIDDEN_PARTS - 1:] = [(rest[0][0], "\n".join(t for _, t in rest))]
    return out


def _changed_segment(before: str, after: str) -> str:
    """The words of ``after`` that differ from ``before``: what lies between their common
    prefix and common suffix, widened to whole words."""
    if before == after:
        return ""
    n = min(len(before), len(after))
    start = 0
    while start < n and before[start] == after[start]:
        start += 1
    end = 0
    while end < n - start and before[-1 - end] == after[-1 - end]:
        end += 1
    stop = len(after) - end
    while start > 0 and not after[start - 1].isspace():
        start -= 1
    while stop < len(after) and not after[stop].isspace():
        stop += 1
    return after[start:stop].strip()


def _squash(text: str) -> str:
    """``text`` lowercased with its whitespace runs made single spaces (what the tokenizer
    sees alike)."""
    return " ".join(text.lower().split())


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one text costs: ``texts`` = the text, the view judged in its place (when
    ``view`` is not ``original``), the decoded parts and hidden page parts, then the view's
    sentence units; ``n_views`` = 1 or 2."""

    view: str
    texts: list[str]
    n_views: int
    #: The kind of each part judged on its own (``base64``, ``rot13``, ``html_comment`` …),
    #: scored after the views.
    decoded: tuple[str, ...] = ()


def _model_dir(model: str, config: Config) -> Path:
    """A model directory, or the name of one under ``<cache>/models``."""
    from infershield.detectors.models import models_dir

    p = Path(model).expanduser()
    model_dir = p if p.is_dir() else models_dir(config.cache_path) / model
    if not model_dir.is_dir():
        raise ConfigError(f"classifier model {model!r} not found ({model_dir})")
    return model_dir
