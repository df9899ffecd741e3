"""Worker-side model factories for the ``local`` backend (built inside sandbox workers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from infershield.backends.sandbox import ModelFn
from infershield.errors import InvalidRequest


def _session(path: str, intra_op_threads: int) -> Any:
    """A CPU ONNX Runtime session for a sandbox worker."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread per worker: parallelism comes from the pool, and fewer threads keep the
    # worker's address space (and so its RLIMIT_AS budget) small.
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_model(path: str, intra_op_threads: int = 1) -> ModelFn:
    """Factory for an ONNX model file: the session is created here, inside the worker."""
    session = _session(path, intra_op_threads)
    output_names = [o.name for o in session.get_outputs()]
    input_names = {i.name for i in session.get_inputs()}

    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        if set(inputs) != input_names:
            missing = sorted(input_names - set(inputs))
            extra = sorted(set(inputs) - input_names)
            raise InvalidRequest(
                f"expected inputs {sorted(input_names)}; missing {missing}, unexpected {extra}"
            )
        feeds = {k: np.asarray(v) for k, v in inputs.items()}
        return dict(zip(output_names, session.run(output_names, feeds), strict=True))

    return run


#: Token inputs the firewall fills from a text input (Hugging Face BERT-style graphs).
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def text_onnx_model(path: str, tokenizer: str, text_input: str, max_length: int = 256) -> ModelFn:
    """An ONNX graph over token ids, fed from one BYTES text input via ``tokenizer.json``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding()
    session = _session(path, 1)
    graph_inputs = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in session.get_outputs()]

    def run(inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        if set(inputs) != {text_input}:
            raise InvalidRequest(f"expected the single input {text_input!r}")
        arr = np.asarray(inputs[text_input], dtype=object)
        batch = arr.shape[0] if arr.ndim else 1
        texts = [e.decode("utf-8") if isinstance(e, bytes) else str(e) for e in arr.reshape(-1)]
        if len(texts) != batch:
            raise InvalidRequest(
                f"input {text_input!r} must hold one text per batch element, got shape "
                f"{list(arr.shape)}"
            )
        enc = tok.encode_batch(texts)
        feeds: dict[str, Any] = {}
        for name in graph_inputs:
            if name == "input_ids":
                feeds[name] = np.array([e.ids for e in enc], dtype=np.int64)
            elif name == "attention_mask":
                feeds[name] = np.array([e.attention_mask for e in enc], dtype=np.int64)
            elif name == "token_type_ids":
                feeds[name] = np.array([e.type_ids for e in enc], dtype=np.int64)
            else:
                raise InvalidRequest(f"the model needs input {name!r}, which text cannot fill")
        return dict(zip(output_names, session.run(output_names, feeds), strict=True))

    return run


__all__ = ["TOKEN_INPUTS", "onnx_model", "text_onnx_model"]
