"""Cached encoder features for head training: every unit (whole window and short span) of
every window of a text, from one forward pass of the fine-tuned encoder.

The encoder stays fixed (fine-tuning it takes about 90 minutes on 2 CPU cores); heads are
trained on these features in numpy. Features are memoised on disk per text, keyed by the
encoder weights' hash, the span settings and a hash of the text, so a rerun or a new data
mix only encodes texts it has not seen.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infershield.detectors.export import Spans
from infershield.training.training import window_ids

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

WINDOW = 256
#: Windows per text kept for training: the first and the last (encoding every window of the
#: longest documents would take hours on 2 CPU cores; the runtime scores every window).
MAX_WINDOWS = 2
#: The spans the cached training features pool (64 tokens, stride 32).
SPANS = Spans()
#: The spans the shipped graph scores: those, plus 32-token spans every 16 tokens, so a short
#: attack next to padding fills most of some unit (the head is trained on the 64-token ones;
#: the finer ones are checked on benign fixtures and the padding probe instead).
SHIP_SPANS = Spans(finer=((32, 16),))


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


@dataclass(frozen=True)
class TextUnits:
    """One text's units: ``x`` ``[n, 384]`` (L2-normalised), ``whole`` (True for a
    whole-window unit) and ``window`` (the window each unit came from)."""

    x: npt.NDArray[np.float16]
    whole: npt.NDArray[np.bool_]
    window: npt.NDArray[np.int16]


class UnitFeatures:
    """Builds the span-pooling feature graph once and memoises features per text."""

    def __init__(self, cache_dir: Path, encoder_path: Path | None = None, *,
                 spans: Spans = SPANS, threads: int = 2) -> None:
        from infershield.detectors.models import shipped_encoder_path

        self.encoder_path = encoder_path or shipped_encoder_path()
        self.spans = spans
        h = hashlib.sha256(self.encoder_path.read_bytes())
        # (The spelling of the first cached version's key, so its cache stays valid.)
        key = f"Spans(width={spans.width}, stride={spans.stride}, min_tokens={spans.min_tokens})"
        if spans.finer:
            key += f"+{spans.finer}"
        h.update(f"units-v1|{key}|{WINDOW}|w{MAX_WINDOWS}".encode())
        self.tag = h.hexdigest()[:16]
        self.dir = Path(cache_dir) / f"units-{self.tag}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.threads = threads
        self._mem: dict[str, TextUnits] = {}
        self._load()
        self._sess: Any = None

    def _load(self) -> None:
        for shard in sorted(self.dir.glob("shard-*.npz")):
            with np.load(shard, allow_pickle=False) as z:
                keys, n, x = z["keys"], z["n"], z["x"]
                whole, win = z["whole"], z["window"]
            off = np.concatenate([[0], np.cumsum(n)])
            for i, k in enumerate(keys):
                a, b = off[i], off[i + 1]
                self._mem[str(k)] = TextUnits(x[a:b], whole[a:b], win[a:b])

    def _session(self) -> Any:
        if self._sess is None:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            from infershield.detectors.bert import load_encoder
            from infershield.detectors.export import export_minilm
            from infershield.detectors.runtime import special_tokens

            model_dir = self.dir / "model"
            if not (model_dir / "model.onnx").is_file():
                export_minilm(model_dir, head=None, encoder=load_encoder(self.encoder_path),
                              spans=self.spans, window=WINDOW)
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.log_severity_level = 3
            self._sess = ort.InferenceSession(str(model_dir / "model.onnx"), so,
                                              providers=["CPUExecutionProvider"])
            self._tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            self._tok.no_truncation()
            self._tok.no_padding()
            self._prefix, self._suffix = special_tokens(self._tok)
        return self._sess

    def has(self, text: str) -> bool:
        """Whether ``text``'s features are cached."""
        return text_key(text) in self._mem

    def get(self, texts: Sequence[str], *, shard_every: int = 2000) -> list[TextUnits]:
        """Units of each text (encoding the ones not cached yet; saved every
        ``shard_every`` texts so an interrupted run keeps its work)."""
        todo = list(dict.fromkeys(t for t in texts if text_key(t) not in self._mem))
        if todo:
            log.info("encoding %d new texts (%d cached)", len(todo), len(self._mem))
            # Long texts last, so the cheap ones are saved early.
            todo.sort(key=len)
            for start in range(0, len(todo), shard_every):
                self._encode(todo[start : start + shard_every])
        return [self._mem[text_key(t)] for t in texts]

    def _encode(self, texts: list[str], batch_tokens: int = 4096) -> None:
        sess = self._session()
        body = WINDOW - len(self._prefix) - len(self._suffix)
        wins: list[list[int]] = []
        owner: list[int] = []
        widx: list[int] = []
        for i, enc in enumerate(self._tok.encode_batch(texts, add_special_tokens=False)):
            ws = window_ids(enc.ids, body, self._prefix, self._suffix, MAX_WINDOWS)
            wins += ws
            owner += [i] * len(ws)
            widx += list(range(len(ws)))
        n_units = 1 + len(self.spans.starts(WINDOW))
        units = np.zeros((len(wins), n_units, 384), np.float16)
        counts = np.zeros((len(wins), n_units), np.float32)
        order = sorted(range(len(wins)), key=lambda i: len(wins[i]))
        t0 = time.monotonic()
        start = 0
        while start < len(order):
            length = len(wins[order[start]])
            n = max(1, min(64, batch_tokens // max(length, 1)))
            idx = order[start : start + n]
            length = max(len(wins[i]) for i in idx)
            ids = np.zeros((len(idx), length), np.int64)
            mask = np.zeros_like(ids)
            for r, i in enumerate(idx):
                ids[r, : len(wins[i])] = wins[i]
                mask[r, : len(wins[i])] = 1
            u, c = sess.run(["units", "unit_tokens"], {"input_ids": ids, "attention_mask": mask})
            units[idx] = u.astype(np.float16)
            counts[idx] = c
            start += len(idx)
        log.info("encoded %d windows of %d texts in %.1fs", len(wins), len(texts),
                 time.monotonic() - t0)
        keys, ns, xs, wholes, windows = [], [], [], [], []
        by_text: dict[int, list[int]] = {}
        for w, o in enumerate(owner):
            by_text.setdefault(o, []).append(w)
        for i, t in enumerate(texts):
            rows_x: list[npt.NDArray[np.float16]] = []
            rows_whole: list[bool] = []
            rows_w: list[int] = []
            for w in by_text[i]:
                whole_n = counts[w, 0]
                rows_x.append(units[w, 0])
                rows_whole.append(True)
                rows_w.append(widx[w])
                for k in range(1, n_units):
                    c = counts[w, k]
                    # A span identical to the whole window (short text) adds nothing; a
                    # ragged tail span is never scored.
                    if c >= self.spans.min_tokens and c < whole_n:
                        rows_x.append(units[w, k])
                        rows_whole.append(False)
                        rows_w.append(widx[w])
            tu = TextUnits(np.stack(rows_x), np.array(rows_whole),
                           np.array(rows_w, np.int16))
            self._mem[text_key(t)] = tu
            keys.append(text_key(t))
            ns.append(len(rows_x))
            xs.append(tu.x)
            wholes.append(tu.whole)
            windows.append(tu.window)
        shard = self.dir / f"shard-{time.time_ns()}.npz"
        tmp = shard.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), n=np.array(ns, np.int64), x=np.concatenate(xs),
                 whole=np.concatenate(wholes), window=np.concatenate(windows))
        tmp.rename(shard)


def stack(units: Sequence[TextUnits], *, spans: bool = True
          ) -> tuple[F32, I64, npt.NDArray[np.bool_]]:
    """All units of ``units`` as one matrix, the text index of each row, and whether each
    row is a whole-window unit. ``spans=False`` keeps the whole-window units only (the
    pre-span scoring)."""
    xs, owner, whole = [], [], []
    for i, u in enumerate(units):
        keep = np.ones(len(u.whole), bool) if spans else u.whole
        xs.append(u.x[keep])
        owner.append(np.full(int(keep.sum()), i, np.int64))
        whole.append(u.whole[keep])
    return (np.concatenate(xs).astype(np.float32), np.concatenate(owner),
            np.concatenate(whole))
