"""A tiny ONNX sequence classifier and word-level tokenizer, built in-test with onnx.helper.

Labels: 0 BENIGN, 1 INJECTION, 2 JAILBREAK. The INJECTION logit fires when the token
``inject`` is anywhere in the window, JAILBREAK when ``jailbreak`` is; both also move a little
with the masked mean of the token ids, so wrong padding or masking changes the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, pre_tokenizers, processors

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "inject", "jailbreak"] + [f"w{i}" for i in range(40)]


def _tokenizer(punctuation: bool = False) -> Tokenizer:
    # With ``punctuation`` the full stop is a token of its own (id after the words), so the
    # prefilter can cut sentences; without it, it is [UNK] like any other unknown word.
    vocab = {w: i for i, w in enumerate([*WORDS, "."] if punctuation else WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok


def _graph(jailbreak: bool = True) -> onnx.ModelProto:
    def c(name: str, arr: np.ndarray) -> onnx.TensorProto:  # type: ignore[type-arg]
        return numpy_helper.from_array(arr, name)

    n = helper.make_node
    nodes = [
        n("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        n("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        n("Equal", ["input_ids", "inj_id"], ["is_inj"]),
        n("Equal", ["input_ids", "jb_id"], ["is_jb"]),
        n("Cast", ["is_inj"], ["inj_f"], to=TensorProto.FLOAT),
        n("Cast", ["is_jb"], ["jb_f"], to=TensorProto.FLOAT),
        n("Mul", ["inj_f", "mask_f"], ["inj_m"]),
        n("Mul", ["jb_f", "mask_f"], ["jb_m"]),
        n("ReduceMax", ["inj_m"], ["inj_any"], axes=[1], keepdims=1),
        n("ReduceMax", ["jb_m"], ["jb_any"], axes=[1], keepdims=1),
        n("Mul", ["ids_f", "mask_f"], ["ids_m"]),
        n("ReduceSum", ["ids_m", "ax1"], ["ids_sum"], keepdims=1),
        n("ReduceSum", ["mask_f", "ax1"], ["cnt"], keepdims=1),
        n("Div", ["ids_sum", "cnt"], ["ids_mean"]),
        n("Mul", ["ids_mean", "small"], ["jitter"]),
        n("Mul", ["inj_any", "ten"], ["inj_10"]),
        n("Mul", ["jb_any", "ten"], ["jb_10"]),
        n("Sub", ["inj_10", "five"], ["inj_l0"]),
        n("Sub", ["jb_10", "five"], ["jb_l0"]),
        n("Add", ["inj_l0", "jitter"], ["inj_l"]),
        n("Add", ["jb_l0", "jitter"], ["jb_l"]),
        n("Mul", ["inj_l", "zero"], ["ben_l"]),
        n("Concat", ["ben_l", "inj_l", "jb_l"], ["logits"], axis=1),
    ]
    inits = [
        c("inj_id", np.array(WORDS.index("inject"), np.int64)),
        # Without ``jailbreak`` the id can never occur, so the model is blind to the word.
        c("jb_id", np.array(WORDS.index("jailbreak") if jailbreak else 10_000, np.int64)),
        c("ax1", np.array([1], np.int64)),
        c("small", np.array(0.05, np.float32)),
        c("ten", np.array(10.0, np.float32)),
        c("five", np.array(5.0, np.float32)),
        c("zero", np.array(0.0, np.float32)),
    ]
    inputs = [helper.make_tensor_value_info(x, TensorProto.INT64, ["b", "s"])
              for x in ("input_ids", "attention_mask", "token_type_ids")]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])]
    g = helper.make_graph(nodes, "tiny", inputs, out, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def build_tiny_classifier(out: Path, *, max_positions: int = 16, jailbreak: bool = True,
                          meta: dict[str, float] | None = None,
                          punctuation: bool = False) -> Path:
    """Write model.onnx + tokenizer.json + config.json (HF layout) into ``out``.

    ``jailbreak=False`` builds a model blind to the word ``jailbreak`` (a weak prefilter);
    ``meta`` becomes config.json's ``infershield`` section; ``punctuation`` gives the
    tokenizer a token for the full stop.
    """
    out.mkdir(parents=True, exist_ok=True)
    onnx.save_model(_graph(jailbreak), str(out / "model.onnx"))
    _tokenizer(punctuation).save(str(out / "tokenizer.json"))
    cfg: dict[str, object] = {"id2label": {"0": "BENIGN", "1": "INJECTION", "2": "JAILBREAK"},
                              "max_position_embeddings": max_positions}
    if meta is not None:
        cfg["infershield"] = meta
    (out / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return out


def filler(n: int, offset: int = 0) -> str:
    return " ".join(f"w{(i + offset) % 40}" for i in range(n))
