"""``classifier``: an ONNX sequence classifier that scores every token window of the text."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from infershield.checks.base import Check, CheckContext, Stage
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

    def __post_init__(self) -> None:
        check_bounds(self)


class ClassifierCheck(Check):
    """Blocks text whose attack probability (max over windows) reaches the threshold."""

    Options = ClassifierOptions
    stages: ClassVar[tuple[Stage, ...]] = ("input", "output")
    runs_inline: ClassVar[bool] = False  # a forward pass: never on the event loop
    REASON_ATTACK = "classifier: attack probability {score:.3f} >= {threshold:.3f}"
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
            clear = o.prefilter_clear
            if clear is None:
                try:
                    clear = float(fast.meta["clear_below"])
                except (KeyError, TypeError, ValueError):
                    raise ConfigError(
                        f"prefilter {prefilter_dir} has no recommended clear_below: "
                        "set prefilter_clear"
                    ) from None
            if not 0.0 <= clear <= self.threshold:
                raise ConfigError(
                    f"prefilter_clear {clear} must be in [0, threshold {self.threshold}]")
            self.cascade = Cascade(fast, self.model, clear)
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

    def _verdict(self, score: float, canonical: float | None = None) -> Verdict:
        view = "original"
        details: tuple[tuple[str, str], ...] = (("view", view),)
        if canonical is not None:
            # Content, not form: the canonical view is what the text says.
            details = (("view", "canonical"), ("original_score", f"{score:.3f}"))
            score, view = canonical, "canonical"
        score = min(max(score, 0.0), 1.0)
        if score >= self.threshold:
            reason = self.REASON_ATTACK.format(score=score, threshold=self.threshold)
            if view != "original":
                reason += f" ({view} view)"
            return self.block(reason, score, categories=self.categories, details=details)
        return self.allow(score=score, details=details if canonical is not None else ())

    def _unavailable(self, exc: Exception) -> Verdict:
        # Fail closed: a detector that cannot answer blocks, and the verdict says why.
        return Verdict(self.name, Decision.BLOCK, Status.ERROR, 1.0,
                       self.REASON_UNAVAILABLE.format(error=exc), categories=self.categories)

    def _too_long(self) -> Verdict:
        # Fail closed: text we cannot fully score is never waved through.
        return self.block(self.REASON_TOO_LONG, 1.0, categories=self.categories)

    def _canonical(self, ctx: CheckContext) -> str | None:
        """The canonical view of ``ctx.text`` when it says something the text itself does not
        (case and spacing alone do not count: the tokenizer ignores them)."""
        if not self.options.canonical:
            return None
        from infershield.native import analysis_for

        norm = analysis_for(ctx).normalized
        if not norm.strip() or norm == " ".join(ctx.text.lower().split()):
            return None
        return norm

    def check(self, ctx: CheckContext) -> Verdict:
        try:
            score = self.batcher.score(ctx.text)
            canonical = self._canonical(ctx)
            if canonical is not None:
                return self._verdict(score, self.batcher.score(canonical))
            return self._verdict(score)
        except LimitExceeded:
            return self._too_long()
        except DetectorUnavailable as exc:
            return self._unavailable(exc)

    async def acheck(self, ctx: CheckContext) -> Verdict:
        """Event-loop friendly: awaits the batcher's futures instead of blocking the loop."""
        try:
            canonical = self._canonical(ctx)
            futures = [self.batcher.submit(ctx.text)]
            if canonical is not None:
                futures.append(self.batcher.submit(canonical))
            scores = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            return self._verdict(*scores)
        except LimitExceeded:
            return self._too_long()
        except DetectorUnavailable as exc:
            return self._unavailable(exc)

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        # A batch already is a batch: score it directly, windows sorted by length. Each
        # text's canonical view (when it differs) is scored in the same pass.
        views = [self._canonical(ctx) for ctx in ctxs]
        texts = [ctx.text for ctx in ctxs] + [v for v in views if v is not None]
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
        scores = [None if w is None else next(scored) for w in per_text]
        out: list[Verdict] = []
        extra = iter(scores[len(ctxs):])
        for i, view in enumerate(views):
            own = scores[i]
            canon = next(extra) if view is not None else None
            if own is None or (view is not None and canon is None):
                out.append(self._too_long())
            elif canon is None:
                out.append(self._verdict(own))
            else:
                out.append(self._verdict(own, canon))
        return out

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


def _model_dir(model: str, config: Config) -> Path:
    """A model directory, or the name of one under ``<cache>/models``."""
    from infershield.detectors.models import models_dir

    p = Path(model).expanduser()
    model_dir = p if p.is_dir() else models_dir(config.cache_path) / model
    if not model_dir.is_dir():
        raise ConfigError(f"classifier model {model!r} not found ({model_dir})")
    return model_dir
