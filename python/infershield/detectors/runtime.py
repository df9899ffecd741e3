"""Generic ONNX sequence-classification runtime: windowing, providers, micro-batching.

Loads any Hugging Face-style directory (``model.onnx`` + ``tokenizer.json`` + ``config.json``
with ``id2label``): our shipped MiniLM head, or an optimum export of ProtectAI's deberta-v3
prompt-injection model or Llama Prompt Guard 2.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from infershield.errors import ConfigError, LimitExceeded
from infershield.telemetry.instrument import capture_context, detector_batch_span

if TYPE_CHECKING:
    from infershield.detectors.remote import TritonModel

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
FP16_FILE = "model_fp16.onnx"  # a float16 twin of model.onnx, used on the CUDA EP when asked
CPU = "CPUExecutionProvider"
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """How a model directory is run. ``attack_labels`` empty means every non-benign label."""

    attack_labels: tuple[str, ...] = ()
    #: "auto" = CUDA EP when onnxruntime-gpu and a GPU are present, else CPU EP.
    providers: tuple[str, ...] = ("auto",)
    #: On the CUDA EP, load ``model_fp16.onnx`` (when the directory has one) instead.
    fp16: bool = False
    window: int = 0  # tokens per window incl. specials; 0 = the model's own (config.json)
    stride: int = 0  # step between window starts, in tokens; 0 = half a window (50% overlap)
    max_windows: int = 64
    intra_op_threads: int = 0  # 0 = min(cores, 4)
    max_batch: int = 32
    #: On the CUDA EP, feed inputs and fetch logits through an ORT IO binding instead of
    #: ``session.run`` (bench_detector measures both; equal or better on an H200).
    io_binding: bool = True
    #: Let onnxruntime's intra-op threads spin between kernels (lower latency for a model
    #: alone). Two models in one process (a prefilter cascade) turn it off: the idle
    #: session's spinning threads would take the cores from the busy one (a 2-core machine
    #: ran fast + main model in 112 ms with spinning, 53 ms without).
    allow_spinning: bool = True
    warmup: bool = True


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """Map the configured provider list to what this onnxruntime build can run.

    A requested provider that is not available is dropped with a warning, and the CPU EP is
    always kept last, so a CUDA request on a CPU-only host still serves (on the CPU).
    """
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted: list[str] = []
    for p in requested:
        if p == "auto":
            wanted += [CUDA] if _cuda_usable() else []
        elif p in ("cuda", CUDA):
            if _cuda_usable():
                wanted.append(CUDA)
            else:
                log.warning("CUDA execution provider requested but unavailable; using the CPU")
        elif p in ("cpu", CPU):
            pass
        elif p in available:
            wanted.append(p)
        else:
            raise ConfigError(f"unknown or unavailable execution provider {p!r}")
    return [*dict.fromkeys(wanted), CPU]


def cuda_expected(requested: Sequence[str]) -> bool:
    """Whether :func:`resolve_providers` would pick the CUDA EP for ``requested`` (quietly)."""
    return any(p in ("auto", "cuda", CUDA) for p in requested) and _cuda_usable()


def _cuda_usable() -> bool:
    """onnxruntime has the CUDA EP and a GPU is there (onnxruntime-gpu lists CUDA even
    without a device, so also look for a driver-visible GPU)."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


class SequenceClassifier:
    """One ONNX session (built once, warmed up, thread-safe) plus tokenizer and label map.

    ``score`` returns one attack probability per text: every overlapping token window is
    scored and the maximum wins, so an attack cannot hide past the first window.

    With ``remote`` (a :class:`~infershield.detectors.remote.TritonModel`) the forward pass
    runs on Triton instead: the directory then only supplies the tokenizer, the labels and the
    model's metadata (window, threshold), and no local session is loaded.
    """

    def __init__(self, model_dir: Path, options: RuntimeOptions | None = None, *,
                 remote: TritonModel | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.options = opts = options or RuntimeOptions()
        self.model_dir = model_dir = Path(model_dir)
        self.remote = remote
        self.providers = resolve_providers(opts.providers) if remote is None else []
        model_path = model_dir / "model.onnx"
        if remote is None and opts.fp16:
            fp16_path = model_dir / FP16_FILE
            if CUDA not in self.providers:
                # CPUs have no fast float16 matmul in onnxruntime: float32 is quicker there.
                # Not worth a line at INFO: fp16 is the classifier's default on any machine.
                log.debug("fp16 applies to the CUDA EP only; using %s on the CPU", model_path.name)
            elif fp16_path.is_file():
                model_path = fp16_path
            else:
                log.warning("fp16 requested but %s is missing; using %s", fp16_path, model_path)
        needed = [model_dir / "tokenizer.json", model_dir / "config.json"]
        for p in needed if remote is not None else [model_path, *needed]:
            if not p.is_file():
                raise ConfigError(f"classifier model file missing: {p}")
        try:
            cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            id2label = {int(k): str(v) for k, v in cfg["id2label"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{model_dir / 'config.json'}: needs an id2label map ({exc})"
            ) from None
        self.labels = tuple(id2label[i] for i in range(len(id2label)))
        self.meta: dict[str, Any] = dict(cfg.get("infershield", {}))
        attack = opts.attack_labels or tuple(
            lab for lab in self.labels if lab.lower() not in ("benign", "safe", "legit", "label_0")
        )
        unknown = [a for a in attack if a not in self.labels]
        if unknown or not attack:
            raise ConfigError(
                f"attack labels {list(unknown or attack)} not in the model's labels "
                f"{list(self.labels)}"
            )
        self.attack_labels = tuple(attack)
        self._attack_idx = np.array([self.labels.index(a) for a in attack])

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self._prefix, self._suffix = special_tokens(self.tokenizer)
        self.pad_id = int(self.tokenizer.token_to_id("[PAD]") or cfg.get("pad_token_id") or 0)
        model_max = int(cfg.get("max_position_embeddings", 512))
        self.window = min(opts.window or int(self.meta.get("window", model_max)), model_max)
        body = self.window - len(self._prefix) - len(self._suffix)
        self.stride = opts.stride or max(1, body // 2)
        if body <= 0 or not 0 < self.stride < body:
            raise ConfigError(
                f"window {self.window} / stride {self.stride}: need 0 < stride < body"
            )
        self._body = body
        if opts.max_windows < 1 or opts.max_batch < 1:
            raise ConfigError("max_windows and max_batch must be positive")
        self.model_path = model_path
        if remote is not None:
            self._init_remote(remote)
            return

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = opts.intra_op_threads or min(os.cpu_count() or 1, 4)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if not opts.allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Dynamic int8 quantisation with one scale per batch would let a window's score
        # depend on the rest of its batch (other callers' texts): rewrite it to per-token
        # scales, or, where no rewrite applies, run one window per forward pass.
        from infershield.detectors.quantization import batch_independence

        try:
            plan = batch_independence(model_path)
        except Exception as exc:  # onnx raises its own types for a file it cannot parse
            raise ConfigError(f"cannot load {model_path}: {exc}") from None
        self.one_row = plan.one_row
        if plan.model is not None or plan.one_row:
            log.info("%s: %s", model_path, plan.why if plan.model is not None else
                     f"scored one window per pass ({plan.why})")
        source: str | bytes = (str(model_path) if plan.model is None
                               else plan.model.SerializeToString())
        try:
            self.session = ort.InferenceSession(source, so, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(f"cannot load {model_path}: {exc}") from None
        self.active_providers = tuple(self.session.get_providers())
        self._inputs = {i.name for i in self.session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= self._inputs:
            raise ConfigError(f"{model_path}: needs input_ids and attention_mask inputs")
        self._output = self.session.get_outputs()[0].name
        self._use_io_binding = opts.io_binding and CUDA in self.active_providers
        if opts.warmup:
            self.score(["warm up"])

    def _init_remote(self, remote: TritonModel) -> None:
        """Ask Triton about the model now, so a wrong model is a start-up error; one that is
        not up yet only warns (each request is blocked until it answers)."""
        from infershield.detectors.remote import DetectorUnavailable

        self.active_providers = (f"triton:{remote.where}",)
        self._inputs = {"input_ids", "attention_mask", "token_type_ids"}
        self._output = ""
        self._use_io_binding = False
        self.one_row = False  # Triton batches as it is configured to
        try:
            remote.describe()
        except DetectorUnavailable as exc:
            log.warning("classifier offload: %s; requests are blocked until it answers", exc)
            return
        log.info("classifier offloaded to Triton model %s (tls=%s)", remote.where, remote.tls)

    # ------------------------------------------------------------------ tokenisation

    def windows(self, text: str) -> list[list[int]]:
        """Overlapping token windows (with special tokens) covering all of ``text``."""
        return self.windows_batch([text])[0]

    def windows_batch(self, texts: Sequence[str]) -> list[list[list[int]]]:
        """Windows of each text; LimitExceeded when any text needs too many."""
        return _or_raise(self.windows_each(texts))

    def windows_each(self, texts: Sequence[str]) -> list[list[list[int]] | LimitExceeded]:
        """Windows of each text, or the LimitExceeded of a text that needs too many.

        The texts are tokenised together (in parallel, outside the GIL), so a batch costs
        far less than tokenising its texts one by one.
        """
        out: list[list[list[int]] | LimitExceeded] = []
        for enc in self.tokenizer.encode_batch(list(texts), add_special_tokens=False):
            ids = enc.ids
            starts = window_starts(len(ids), self._body, self.stride)
            if len(starts) > self.options.max_windows:
                out.append(LimitExceeded(
                    f"text needs {len(starts)} windows (> max_windows {self.options.max_windows})",
                    limit="classifier.max_windows",
                ))
                continue
            out.append([self._prefix + ids[s : s + self._body] + self._suffix for s in starts])
        return out

    # ------------------------------------------------------------------ inference

    def score(self, texts: Sequence[str]) -> F32:
        """Attack probability per text: the max over its windows."""
        return self.score_windows(self.windows_batch(texts))

    def score_windows(self, per_text: Sequence[Sequence[list[int]]]) -> F32:
        flat = [w for ws in per_text for w in ws]
        return max_per_text(self.window_probs(flat), owners([len(ws) for ws in per_text]),
                            len(per_text))

    def window_probs(self, windows: Sequence[list[int]]) -> F32:
        """Attack probability per window; windows are sorted by length so padding stays low."""
        probs = np.zeros(len(windows), np.float32)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        mb = 1 if self.one_row else self.options.max_batch
        for start in range(0, len(order), mb):
            idx = order[start : start + mb]
            logits = self.forward([windows[i] for i in idx])
            probs[idx] = self._attack_prob(logits)
        return probs

    def forward(self, windows: Sequence[list[int]]) -> F32:
        """Raw logits for a padded batch of token windows (releases the GIL inside ORT)."""
        length = max(len(w) for w in windows)
        ids = np.full((len(windows), length), self.pad_id, np.int64)
        mask = np.zeros((len(windows), length), np.int64)
        for r, w in enumerate(windows):
            ids[r, : len(w)] = w
            mask[r, : len(w)] = 1
        feeds: dict[str, I64] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        if self.remote is not None:
            return self.remote.forward(feeds)
        if self._use_io_binding:
            binding = self.session.io_binding()
            for name, arr in feeds.items():
                binding.bind_cpu_input(name, arr)
            binding.bind_output(self._output, "cpu")
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            out = self.session.run([self._output], feeds)[0]
        return np.asarray(out, np.float32)

    def _attack_prob(self, logits: F32) -> F32:
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise RuntimeError(f"model returned logits of shape {logits.shape}")
        if logits.shape[1] == 1:  # a single-logit (sigmoid) head
            p: F32 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return p
        z = np.exp(logits - logits.max(1, keepdims=True))
        sm = z / z.sum(1, keepdims=True)
        out: F32 = np.clip(sm[:, self._attack_idx].sum(1), 0.0, 1.0)
        return out


def window_starts(n_tokens: int, body: int, stride: int) -> list[int]:
    """Start offsets of the windows of ``body`` tokens, ``stride`` apart, that cover a text of
    ``n_tokens`` tokens; the tail is always covered (the last window ends at the last token).

    The one windowing rule: serving and training both cut texts with it, so a model is trained
    on the same windows it later scores.
    """
    starts = list(range(0, max(n_tokens - body, 0) + 1, stride))
    if starts[-1] + body < n_tokens:
        starts.append(n_tokens - body)
    return starts


def special_tokens(tok: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after a single sequence."""
    probe = tok.encode("hello", add_special_tokens=False).ids
    full = tok.encode("hello", add_special_tokens=True).ids
    for i in range(len(full) - len(probe) + 1):
        if full[i : i + len(probe)] == probe:
            return list(full[:i]), list(full[i + len(probe) :])
    raise ConfigError("cannot locate the tokenizer's special tokens")


def _or_raise(items: Sequence[_T | LimitExceeded]) -> list[_T]:
    """``items``, unless one is a LimitExceeded: then that is raised."""
    out: list[_T] = []
    for item in items:
        if isinstance(item, LimitExceeded):
            raise item
        out.append(item)
    return out


def owners(counts: Sequence[int]) -> npt.NDArray[np.int64]:
    """The text index of each window, for texts of ``counts`` consecutive windows."""
    return np.repeat(np.arange(len(counts), dtype=np.int64), counts)


def max_per_text(probs: F32, owner: npt.NDArray[np.int64], n_texts: int) -> F32:
    """Each text's score: the max over its windows' ``probs`` (0 for a text without any)."""
    out = np.zeros(n_texts, np.float32)
    np.maximum.at(out, owner, probs)
    return out


def shares_windows(a: SequenceClassifier, b: SequenceClassifier) -> bool:
    """Whether both models cut any text into the same token windows (same tokenizer,
    window and stride), so one tokenisation serves both."""
    return (a.tokenizer.to_str() == b.tokenizer.to_str()
            and (a.window, a.stride) == (b.window, b.stride))


# ---------------------------------------------------------------------- cascade


def _meta_number(meta: dict[str, Any], key: str, kind: type[int] | type[float],
                 default: float | None = None) -> Any:
    """A number from a model's ``meta`` (``default`` when absent); a bad value is a
    ConfigError, so a prefilter never weakens screening silently."""
    if key not in meta:
        return default
    try:
        return kind(meta[key])
    except (TypeError, ValueError):
        raise ConfigError(f"prefilter {key} {meta[key]!r} is not a number") from None


#: The shortest prefilter piece: below this a piece holds too little text to judge.
MIN_PIECE_TOKENS = 16
#: A sentence the prefilter judges alone has at least this many tokens: a shorter sentence
#: joins the next one (a short tail joins the last), so "Hi." or "Step 2:" is not judged alone.
MIN_SENTENCE_TOKENS = 6
#: Which windows the prefilter also judges sentence by sentence (see :class:`Cascade`).
SentenceScope = Literal["short", "all"]
#: What ends a sentence, where the tokenizer has it as a token of its own.
SENTENCE_ENDS = (".", "!", "?", ";", ":", "\u3002", "\uff01", "\uff1f")


def sentence_end_ids(tokenizer: Any) -> frozenset[int]:
    """The ids of :data:`SENTENCE_ENDS` that ``tokenizer`` has as single tokens of their own
    (never the unknown token): none for a tokenizer without punctuation."""
    ids = set()
    for mark in SENTENCE_ENDS:
        enc = tokenizer.encode(mark, add_special_tokens=False).ids
        if len(enc) == 1 and tokenizer.id_to_token(enc[0]) == mark:
            ids.add(enc[0])
    return frozenset(ids)


def sentence_pieces(body: Sequence[int], ends: frozenset[int], size: int,
                    min_tokens: int = MIN_SENTENCE_TOKENS) -> list[tuple[int, int]]:
    """``(start, stop)`` of the sentences of a window's ``body`` (token ids): spans that end at
    a sentence-end token, at least ``min_tokens`` long (a shorter one joins the next, a short
    tail the last); a sentence of more than ``size`` tokens is cut into consecutive pieces of
    ``size`` (the last one ends at its end). A body without sentence ends is one sentence."""
    spans: list[tuple[int, int]] = []
    start = 0
    for i, t in enumerate(body):
        if t in ends and i + 1 - start >= min_tokens:
            spans.append((start, i + 1))
            start = i + 1
    if start < len(body):
        if spans and len(body) - start < min_tokens:
            spans[-1] = (spans[-1][0], len(body))
        else:
            spans.append((start, len(body)))
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if b - a > size:
            out += [(a + s, a + s + size) for s in window_starts(b - a, size, size)]
        else:
            out.append((a, b))
    return out


def packed_pieces(body: Sequence[int], ends: frozenset[int], size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of pieces of at most ``size`` tokens that cover ``body``, cut at
    sentence ends: consecutive sentences (:func:`sentence_pieces`) are packed into one piece
    while they fit. A piece boundary never falls inside a sentence that fits in a piece, so an
    attack sentence is never split between two pieces, each too diluted to flag. Without
    sentence ends: consecutive pieces of ``size`` (the last one ends at the end)."""
    return pack_spans(sentence_pieces(body, ends, size), size)


def pack_spans(spans: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Consecutive ``spans`` (:func:`sentence_pieces`) packed into pieces of at most ``size``
    tokens while they fit (:func:`packed_pieces` from spans already cut)."""
    out: list[tuple[int, int]] = []
    for a, z in spans:
        if out and z - out[-1][0] <= size:
            out[-1] = (out[-1][0], z)
        else:
            out.append((a, z))
    return out


@dataclass(frozen=True, slots=True)
class CascadeWindows:
    """A text's windows for the fast model and for the main model (the same list when both
    tokenise alike); its length is the main model's window count (the batcher's unit)."""

    fast: list[list[int]]
    main: list[list[int]]

    def __len__(self) -> int:
        return len(self.main)


class Cascade:
    """A fast model screens every window; only the windows it cannot clear reach the main
    model.

    When both models cut text into the same windows, each window the fast model scores below
    ``clear_below`` keeps that score and every other window gets the main model's score; a
    text's score is the max over its windows, as always. So a long document with one odd
    paragraph pays the main model for that window only. (Models that window differently are
    cascaded per text: a text none of whose windows reaches the cut keeps its fast score,
    every other text gets the main model's.) The cascade never blocks what the main model
    alone would allow (``clear_below`` must not exceed the blocking threshold); it misses an
    attack only when the fast model clears every window in which the main model sees it, and
    the cut is chosen on held-out data so that such misses stay rare.

    With ``piece_tokens`` (shared windows only), a window of more than that many tokens is
    screened by its pieces instead: the fast model scores pieces of at most ``piece_tokens``
    tokens, consecutive sentences packed together (:func:`packed_pieces`), and the window
    goes to the main model when any piece reaches ``piece_clear``. The small model dilutes an
    attack in a long window far more than the main model does: an attack padded with benign
    text scored below the cut as a whole window, while the piece that holds it does not.
    Pieces cost about what the window did (the same tokens, shorter attention); cutting them
    at sentence ends keeps an attack sentence whole in one piece.

    With ``sentence_clear`` as well (pieces on), a window of two sentences or more is also
    judged sentence by sentence (:func:`sentence_pieces`), and goes to the main model when
    one sentence reaches ``sentence_clear``: an attack after one benign sentence fills
    neither a short window nor a piece, while its own sentence reads as an attack. Sentences
    get a stricter cut than pieces (the small model flags single everyday instructions more
    often). ``sentence_scope`` says which windows: ``short`` (the default) those of at most
    ``piece_tokens`` tokens, where it costs at most one more short pass; ``all`` every window,
    which doubles the fast model's work on long ones. The main model still judges the whole
    window.
    """

    def __init__(self, fast: SequenceClassifier, main: SequenceClassifier,
                 clear_below: float, *, piece_tokens: int = 0,
                 piece_clear: float | None = None,
                 sentence_clear: float | None = None,
                 sentence_scope: SentenceScope = "short") -> None:
        if not 0.0 <= clear_below < 1.0:
            raise ConfigError(f"prefilter clear_below must be in [0, 1), got {clear_below}")
        piece_clear = clear_below if piece_clear is None else piece_clear
        if not 0.0 <= piece_clear < 1.0:
            raise ConfigError(f"prefilter piece_clear must be in [0, 1), got {piece_clear}")
        if piece_tokens and not MIN_PIECE_TOKENS <= piece_tokens < main.window:
            raise ConfigError(f"prefilter piece_tokens must be 0 or in [{MIN_PIECE_TOKENS}, "
                              f"window {main.window}), got {piece_tokens}")
        if sentence_clear is not None and not 0.0 <= sentence_clear < 1.0:
            raise ConfigError(f"prefilter sentence_clear must be in [0, 1), got {sentence_clear}")
        if sentence_clear is not None and not piece_tokens:
            raise ConfigError("prefilter sentences need pieces (piece_tokens)")
        if sentence_scope not in ("short", "all"):
            raise ConfigError(f"prefilter sentence_scope must be short or all, got "
                              f"{sentence_scope!r}")
        self.fast, self.main, self.clear_below = fast, main, clear_below
        self.piece_tokens, self.piece_clear = piece_tokens, piece_clear
        self.sentence_clear, self.sentence_scope = sentence_clear, sentence_scope
        self.model_dir = main.model_dir
        # Same tokenizer and windows: tokenise once and hand both models the same windows.
        self.shared_windows = shares_windows(fast, main)
        if piece_tokens and not self.shared_windows:
            raise ConfigError("prefilter pieces need a fast model that cuts text into the same "
                              "windows as the main model (same tokenizer, window and stride)")
        self._ends = (sentence_end_ids(fast.tokenizer) if piece_tokens
                      else frozenset[int]())
        self._lock = threading.Lock()
        self.cleared = 0  # texts answered by the fast model alone
        self.escalated = 0  # texts the main model scored (some or all of their windows)
        self.windows_escalated = 0  # windows the main model scored (shared windows only)

    @classmethod
    def from_meta(cls, fast: SequenceClassifier, main: SequenceClassifier, *,
                  clear_below: float | None = None, piece_tokens: int | None = None,
                  piece_clear: float | None = None, sentences: bool = True,
                  sentence_clear: float | None = None,
                  sentence_scope: SentenceScope = "short") -> Cascade:
        """A cascade whose unset settings come from the fast model's ``meta``
        (``clear_below``, ``piece_tokens``, ``piece_clear_below``, ``sentence_clear_below``);
        a missing cut or a value that is not a number is a ConfigError. ``sentences=False``
        turns sentence screening off; pieces off turn it off too."""
        if clear_below is None:
            if "clear_below" not in fast.meta:
                raise ConfigError(f"prefilter {fast.model_dir} has no recommended clear_below: "
                                  "set prefilter_clear")
            clear_below = _meta_number(fast.meta, "clear_below", float)
        if piece_tokens is None:
            # The fast model's own recommendation applies where it can: with a main model
            # that windows differently, the cascade screens whole texts as before.
            piece_tokens = (_meta_number(fast.meta, "piece_tokens", int, 0)
                            if shares_windows(fast, main) else 0)
        if piece_clear is None:
            piece_clear = _meta_number(fast.meta, "piece_clear_below", float, clear_below)
        if not sentences or not piece_tokens:
            sentence_clear = None
        elif sentence_clear is None:  # none recommended: no sentence screening
            sentence_clear = _meta_number(fast.meta, "sentence_clear_below", float)
        return cls(fast, main, clear_below, piece_tokens=piece_tokens, piece_clear=piece_clear,
                   sentence_clear=sentence_clear, sentence_scope=sentence_scope)

    def windows_each(self, texts: Sequence[str]) -> list[CascadeWindows | LimitExceeded]:
        """Both models' windows per text, or the LimitExceeded of either model."""
        main = self.main.windows_each(texts)
        fast = main if self.shared_windows else self.fast.windows_each(texts)
        out: list[CascadeWindows | LimitExceeded] = []
        for f, m in zip(fast, main, strict=True):
            if isinstance(m, LimitExceeded):
                out.append(m)
            elif isinstance(f, LimitExceeded):
                out.append(f)
            else:
                out.append(CascadeWindows(f, m))
        return out

    def score(self, texts: Sequence[str]) -> F32:
        """Attack probability per text, as the cascade decides it."""
        return self.score_windows(_or_raise(self.windows_each(texts)))

    def score_windows(self, per_text: Sequence[CascadeWindows]) -> F32:
        if not self.shared_windows:
            scores = self.fast.score_windows([w.fast for w in per_text])
            todo = [i for i, s in enumerate(scores) if s >= self.clear_below]
            if todo:
                scores[todo] = self.main.score_windows([per_text[i].main for i in todo])
            self._count(len(per_text) - len(todo), len(todo))
            return scores
        flat = [w for ws in per_text for w in ws.main]
        owner = owners([len(ws) for ws in per_text])
        probs = self._fast_screen(flat) if self.piece_tokens else self.fast.window_probs(flat)
        hot = np.flatnonzero(probs >= self.clear_below)
        if hot.size:
            probs[hot] = self.main.window_probs([flat[i] for i in hot])
        escalated = int(np.unique(owner[hot]).size)
        self._count(len(per_text) - escalated, escalated, int(hot.size))
        return max_per_text(probs, owner, len(per_text))

    def _fast_screen(self, flat: Sequence[list[int]]) -> F32:
        """The fast model's score per window, on a scale where ``clear_below`` is the cut: a
        short window's own score; a long one's best piece, mapped so that ``piece_clear``
        lands on ``clear_below``; with sentences, the higher of that and the window's best
        sentence, mapped so that ``sentence_clear`` lands on ``clear_below`` (a cleared
        window's score stays below the cut)."""
        pre, suf, size = self.fast._prefix, self.fast._suffix, self.piece_tokens
        body = [w[len(pre) : len(w) - len(suf)] for w in flat]
        short = [i for i, b in enumerate(body) if len(b) <= size]
        longs = [i for i, b in enumerate(body) if len(b) > size]
        # Each window's sentences are cut once: long windows pack them into pieces, and with
        # sentence screening the windows in scope are judged by them too.
        cut: dict[int, list[tuple[int, int]]] = {
            i: sentence_pieces(body[i], self._ends, size) for i in longs}
        spans = [pack_spans(cut[i], size) for i in longs]
        pieces = [[*pre, *body[i][a:z], *suf]
                  for i, ss in zip(longs, spans, strict=True) for a, z in ss]
        sentences: list[list[int]] = []
        owner: list[int] = []
        if self.sentence_clear is not None and self._ends:
            for i in short if self.sentence_scope == "short" else range(len(body)):
                cuts = cut[i] if i in cut else sentence_pieces(body[i], self._ends, size)
                if len(cuts) >= 2:
                    sentences += [[*pre, *body[i][a:z], *suf] for a, z in cuts]
                    owner += [i] * len(cuts)
        scored = self.fast.window_probs([*(flat[i] for i in short), *pieces])
        probs = np.zeros(len(flat), np.float32)
        probs[short] = scored[: len(short)]
        hi = self.clear_below
        if longs:
            best = max_per_text(scored[len(short) :], owners([len(ss) for ss in spans]),
                                len(longs))
            probs[longs] = _to_window_scale(best, self.piece_clear, hi)
        if sentences:
            # A pass of their own: batched with 64-token pieces, every sentence would be
            # padded to a piece's length (twice the cost, measured).
            own = np.asarray(owner, np.int64)
            best = max_per_text(self.fast.window_probs(sentences), own, len(flat))
            has = np.unique(own)
            probs[has] = np.maximum(probs[has],
                                    _to_window_scale(best[has], self.sentence_clear or 0.0, hi))
        return probs

    def _count(self, cleared: int, escalated: int, windows: int = 0) -> None:
        with self._lock:
            self.cleared += cleared
            self.escalated += escalated
            self.windows_escalated += windows


def _to_window_scale(piece: F32, cut: float, clear_below: float) -> F32:
    """A piece's (or sentence's) score on the window scale: piecewise-linear and monotone, with
    ``cut`` -> ``clear_below``, so one comparison with ``clear_below`` decides for all."""
    return np.where(piece < cut, piece * (clear_below / cut) if cut > 0 else clear_below,
                    clear_below + (piece - cut) * ((1.0 - clear_below) / (1.0 - cut))
                    ).astype(np.float32)


# ---------------------------------------------------------------------- micro-batching


class WindowScorer(Protocol):
    """What :class:`MicroBatcher` drives: a :class:`SequenceClassifier` or a :class:`Cascade`.

    ``windows_each`` turns texts into per-text window items (anything with a ``len``: the
    number of windows it costs); ``score_windows`` scores a list of such items.
    """

    model_dir: Path

    def windows_each(self, texts: Sequence[str]) -> Sequence[Any]: ...

    def score_windows(self, per_text: Sequence[Any]) -> F32: ...


@dataclass(slots=True)
class _Request:
    windows: Any  # one windows_each item of the scorer: sized by its window count
    future: Future[float]
    trace_ctx: Any = None  # the submitter's sampled trace context, for the batch span


class MicroBatcher:
    """Batches concurrent ``submit`` calls into one forward pass.

    A background thread takes the first waiting request plus whatever else is queued (up to
    ``max_batch`` windows) and scores them together, sorted by length so similar lengths
    share a padded batch. With ``max_wait_ms`` 0 (the default) it never waits: an idle model
    answers a lone request at once, and the requests that arrive during a forward pass form
    the next batch, so batches grow with the load. A positive ``max_wait_ms`` also waits up
    to that long for more requests before each pass. Callers block only on their own
    future, so an asyncio caller can ``await asyncio.wrap_future(...)``.

    A blocking caller can use :meth:`score` instead: when the batcher is idle, that runs the
    forward pass in the caller's own thread and skips the hand-off to the batching thread.
    """

    def __init__(self, model: WindowScorer, *, max_batch: int = 32, max_wait_ms: float = 0.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ConfigError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._q: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        # Guards closed-check + put, so nothing is queued behind the stop marker (it would
        # never be answered and its caller would wait forever).
        self._lock = threading.Lock()
        self._running = 0  # forward passes in flight (the batching thread's and inline ones)
        self.batches_run = 0
        self.inline_run = 0
        self._thread = threading.Thread(target=self._loop, name="infershield-batcher", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> Future[float]:
        """Queue ``text``; the future resolves to its attack probability (or the error)."""
        fut: Future[float] = Future()
        try:
            windows = self._windows(text)
        except Exception as exc:
            fut.set_exception(exc)
            return fut
        with self._lock:
            if self._closed:
                fut.set_exception(RuntimeError("the classifier batcher is closed"))
            else:
                self._q.put(_Request(windows, fut, capture_context()))
        return fut

    def score(self, text: str) -> float:
        """``submit(text).result()``, but an idle batcher scores ``text`` in this thread.

        Idle means no forward pass in flight and nothing queued. Waking the batching thread
        and waiting for it costs about 0.5-1 ms, a third of a GPU forward pass. Under load
        the request queues as usual, so batches still form. Never call it on an event loop.
        """
        windows = self._windows(text)
        with self._lock:
            if self._closed:
                raise RuntimeError("the classifier batcher is closed")
            inline = self._running == 0 and self._q.empty()
            if inline:
                self._running += 1
            else:
                fut: Future[float] = Future()
                self._q.put(_Request(windows, fut, capture_context()))
        if not inline:
            return fut.result()
        result = float(self._forward([windows], [capture_context()])[0])
        with self._lock:
            self.inline_run += 1
        return result

    def score_each(self, texts: Sequence[str]) -> list[float]:
        """:meth:`score` for several texts at once (a text's views and units): an idle
        batcher scores them together in this thread, a busy one queues each."""
        windows = [self._windows(t) for t in texts]
        with self._lock:
            if self._closed:
                raise RuntimeError("the classifier batcher is closed")
            inline = self._running == 0 and self._q.empty()
            if inline:
                self._running += 1
            else:
                futs: list[Future[float]] = []
                for w in windows:
                    fut: Future[float] = Future()
                    self._q.put(_Request(w, fut, capture_context()))
                    futs.append(fut)
        if not inline:
            return [f.result() for f in futs]
        ctx = capture_context()
        result = [float(s) for s in self._forward(windows, [ctx] * len(windows))]
        with self._lock:
            self.inline_run += 1
        return result

    def _windows(self, text: str) -> Any:
        windows = self.model.windows_each([text])[0]
        if isinstance(windows, Exception):  # LimitExceeded: too long to score
            raise windows
        return windows

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            n = len(first.windows)
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while n < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                n += len(nxt.windows)
            self._run(batch)
            if stop:
                return

    def _forward(self, per_text: list[Any], trace_ctxs: list[Any]) -> F32:
        """One traced forward pass; the caller has already counted it in ``_running``."""
        try:
            with detector_batch_span(self.model.model_dir.name, len(per_text), trace_ctxs):
                return self.model.score_windows(per_text)
        finally:
            with self._lock:
                self._running -= 1

    def _run(self, batch: list[_Request]) -> None:
        with self._lock:
            self._running += 1
        try:
            scores = self._forward([r.windows for r in batch], [r.trace_ctx for r in batch])
        except Exception as exc:  # every waiting caller sees the failure (fail closed upstream)
            for r in batch:
                r.future.set_exception(exc)
            return
        with self._lock:
            self.batches_run += 1
        for r, s in zip(batch, scores, strict=True):
            r.future.set_result(float(s))

    def close(self) -> None:
        """Answer what is queued, then stop the thread; later submits fail fast."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._q.put(None)
        self._thread.join(timeout=30.0)
