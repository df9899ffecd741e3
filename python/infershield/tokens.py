"""Token counting for sequence limits, in the served model's own tokens.

A model served by the ``local`` backend may ship a Hugging Face ``tokenizer.json`` next to
its ONNX file (``<repo>/<model>/tokenizer.json`` or ``<repo>/<model>/<version>/``); then
limits are counted with that tokenizer. Without one, :class:`ByteTokenCounter` counts UTF-8
bytes, an upper bound on the token count of byte-level BPE and WordPiece tokenizers, so the
fallback can only over-count: it fails closed, never open.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from infershield.errors import ConfigError

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens a text takes in some model's vocabulary."""

    name: str

    def count(self, text: str) -> int: ...


class ByteTokenCounter:
    """Fallback counter: ``ceil(utf8_bytes / bytes_per_token)``.

    With the default ``bytes_per_token=1`` this is an upper bound for byte-level tokenizers
    (each token covers at least one byte), so a limit is never under-enforced.
    """

    def __init__(self, bytes_per_token: float = 1.0) -> None:
        if not bytes_per_token > 0:
            raise ValueError("bytes_per_token must be positive")
        self.bytes_per_token = bytes_per_token
        self.name = f"bytes/{bytes_per_token:g}"

    def count(self, text: str) -> int:
        n = len(text.encode("utf-8", "surrogatepass"))
        return math.ceil(n / self.bytes_per_token)


class HFTokenCounter:
    """Counts with a ``tokenizers.Tokenizer`` loaded from a ``tokenizer.json``.

    Special tokens the model adds (``[CLS]``/``[SEP]``, BOS) are counted too, since they take
    room in the model's context. Truncation and padding configured in the file are disabled:
    a truncating tokenizer would report at most its max length and hide an overlong input.
    """

    def __init__(self, path: str | Path, *, add_special_tokens: bool = True) -> None:
        from tokenizers import Tokenizer

        p = Path(path)
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ConfigError(f"{p}: cannot load tokenizer: {exc}") from None
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.add_special_tokens = add_special_tokens
        self.path = p
        self.name = f"tokenizer:{p}"

    def count(self, text: str) -> int:
        # A lone surrogate cannot cross into Rust; replace it (it is one char either way).
        safe = text.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(text) else text
        return len(self._tok.encode(safe, add_special_tokens=self.add_special_tokens).ids)

    def count_batch(self, texts: list[str]) -> list[int]:
        """Count many texts at once (the Rust side parallelises the batch)."""
        safe = [
            t.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(t) else t for t in texts
        ]
        encs = self._tok.encode_batch(safe, add_special_tokens=self.add_special_tokens)
        return [len(e.ids) for e in encs]


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_tokenizer(model_dir: str | Path) -> Path | None:
    """The model's ``tokenizer.json``: in the model directory, else in its newest version."""
    d = Path(model_dir)
    direct = d / TOKENIZER_FILE
    if direct.is_file():
        return direct
    versions = sorted(
        (v for v in d.iterdir() if v.is_dir() and v.name.isdigit()) if d.is_dir() else (),
        key=lambda v: int(v.name),
        reverse=True,
    )
    for v in versions:
        if (v / TOKENIZER_FILE).is_file():
            return v / TOKENIZER_FILE
    return None


class TokenCounters:
    """Per-model counters, built once per model and shared (counting is thread-safe)."""

    def __init__(self, fallback: TokenCounter | None = None) -> None:
        self.fallback: TokenCounter = fallback or ByteTokenCounter()
        self._by_model: dict[str, TokenCounter] = {}
        self._lock = threading.Lock()

    def register(self, model: str, counter: TokenCounter) -> None:
        with self._lock:
            self._by_model[model] = counter

    def register_dir(self, model: str, model_dir: str | Path) -> TokenCounter:
        """Use the model's ``tokenizer.json`` when it has one, else the byte fallback."""
        path = find_tokenizer(model_dir)
        counter: TokenCounter = HFTokenCounter(path) if path is not None else self.fallback
        if path is None:
            log.info(
                "model %s has no %s; counting tokens as %s", model, TOKENIZER_FILE, counter.name
            )
        self.register(model, counter)
        return counter

    def get(self, model: str) -> TokenCounter | None:
        """The model's own counter, or None when it has no tokenizer registered."""
        with self._lock:
            return self._by_model.get(model)

    def for_model(self, model: str) -> TokenCounter:
        with self._lock:
            return self._by_model.get(model, self.fallback)
