"""Our own numpy + ``onnx`` exporter: a safetensors BERT becomes an ONNX graph.

Graph inputs are ``input_ids`` and ``attention_mask`` (int64, ``[batch, seq]``). The output is
``embeddings`` (mean-pooled, L2-normalised; sentence-transformers semantics) or, with a
:class:`~infershield.detectors.head.Head`, ``logits`` — the Hugging Face
sequence-classification layout the generic runtime loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from infershield.detectors.bert import (
    BertConfig,
    EncoderOverride,
    Weights,
    check_layers,
    layer_heads,
    load_bert,
    minilm_dir,
)
from infershield.detectors.head import Head
from infershield.detectors.quantization import per_token_activations
from infershield.detectors.runtime import FP16_FILE
from infershield.errors import ConfigError

OPSET = 17  # LayerNormalization is a core op from 17 on.


class _Graph:
    """Tiny helper that names nodes and initializers uniquely."""

    def __init__(self, dtype: type[np.floating[Any]] = np.float32) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self.dtype = dtype  # the encoder's compute type: float32, or float16 for GPUs

    def const(self, name: str, arr: np.ndarray) -> str:  # type: ignore[type-arg]
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def fconst(self, name: str, arr: np.ndarray) -> str:  # type: ignore[type-arg]
        """A float constant in the encoder's compute type."""
        return self.const(name, np.asarray(arr, dtype=self.dtype))

    def op(self, op_type: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs))
        return out


MS = "com.microsoft"  # onnxruntime's contrib-op domain (fused transformer kernels)


def _fused_layer(g: _Graph, x: str, w: Weights, p: str, cfg: BertConfig, mask_i32: str) -> str:
    """One encoder layer from onnxruntime's fused kernels: Attention, SkipLayerNormalization
    and BiasGelu. About 7 kernels instead of about 30: what a GPU pays for at small batches."""
    a = p + "attention.self."
    qkv_w = np.concatenate([w[a + m + ".weight"].T for m in ("query", "key", "value")], axis=1)
    qkv_b = np.concatenate([w[a + m + ".bias"] for m in ("query", "key", "value")])
    rows = qkv_b.size // 3  # heads x head size: fewer than hidden_size when pruned
    sizes = {} if rows == cfg.hidden_size else {"qkv_hidden_sizes": [rows] * 3}
    ctx = g.op("Attention", [x, g.fconst(p + "qkv.wT", np.ascontiguousarray(qkv_w)),
                             g.fconst(p + "qkv.b", qkv_b), mask_i32],
               domain=MS, num_heads=rows // cfg.head_dim, **sizes)

    def dense(h: str, name: str) -> str:
        return g.op("MatMul", [h, g.fconst(name + ".wT",
                                           np.ascontiguousarray(w[name + ".weight"].T))])

    def skip_ln(h: str, skip: str, dense_name: str, ln: str) -> str:
        return g.op("SkipLayerNormalization",
                    [h, skip, g.fconst(ln + ".g", w[ln + ".weight"]),
                     g.fconst(ln + ".bb", w[ln + ".bias"]),
                     g.fconst(dense_name + ".b", w[dense_name + ".bias"])],
                    domain=MS, epsilon=cfg.layer_norm_eps)

    out = p + "attention.output.dense"
    x = skip_ln(dense(ctx, out), x, out, p + "attention.output.LayerNorm")
    inter = p + "intermediate.dense"
    gelu = g.op("BiasGelu", [dense(x, inter), g.fconst(inter + ".b", w[inter + ".bias"])],
                domain=MS)
    out = p + "output.dense"
    return skip_ln(dense(gelu, out), x, out, p + "output.LayerNorm")


def _linear(g: _Graph, x: str, w: Weights, name: str) -> str:
    # HF stores Linear weights as (out, in); MatMul wants (in, out).
    wt = g.fconst(name + ".wT", np.ascontiguousarray(w[name + ".weight"].T))
    return g.op("Add", [g.op("MatMul", [x, wt]), g.fconst(name + ".b", w[name + ".bias"])])


def _layer_norm(g: _Graph, x: str, w: Weights, name: str, eps: float) -> str:
    gamma = g.fconst(name + ".g", w[name + ".weight"])
    beta = g.fconst(name + ".bb", w[name + ".bias"])
    return g.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)


def _fused_layers(g: _Graph, x: str, w: Weights, cfg: BertConfig) -> str:
    """The encoder from onnxruntime's fused kernels (:func:`_fused_layer`)."""
    mask_i32 = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)
    for n in range(cfg.num_hidden_layers):
        x = _fused_layer(g, x, w, f"encoder.layer.{n}.", cfg, mask_i32)
    return x


def _standard_layers(g: _Graph, x: str, w: Weights, cfg: BertConfig, mask_f: str,
                     compute: int) -> str:
    """The encoder from standard ONNX ops (any runtime can load it)."""
    f32, i64 = np.float32, np.int64
    hd = cfg.head_dim
    shapes: dict[int, tuple[str, str]] = {}  # heads -> (split, merge) shape constants
    scale = g.fconst("attn_scale", np.array(1.0 / math.sqrt(hd)))
    sqrt2 = g.fconst("sqrt2", np.array(math.sqrt(2.0)))
    half = g.fconst("half", np.array(0.5))
    one = g.fconst("one_c", np.array(1.0))
    # Additive attention bias [B, 1, 1, S]: 0 for real tokens, -1e4 for padding (fp16-safe).
    inv = g.op("Sub", [g.const("one_f", np.array(1.0, f32)), mask_f])
    bias = g.op("Unsqueeze", [g.op("Mul", [inv, g.const("neg_big", np.array(-1e4, f32))]),
                              g.const("ax12", np.array([1, 2], i64))])
    if compute != TensorProto.FLOAT:
        bias = g.op("Cast", [bias], to=compute)
    for n in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{n}."
        nh = layer_heads(cfg, w, n)  # fewer than the config's when pruned
        if nh not in shapes:
            shapes[nh] = (g.const(f"split_shape_{nh}", np.array([0, 0, nh, hd], i64)),
                          g.const(f"merge_shape_{nh}", np.array([0, 0, nh * hd], i64)))
        split_shape, merge_shape = shapes[nh]
        q, k, v = (
            g.op("Reshape", [_linear(g, x, w, p + f"attention.self.{m}"), split_shape])
            for m in ("query", "key", "value")
        )
        qt = g.op("Transpose", [q], perm=[0, 2, 1, 3])
        kt = g.op("Transpose", [k], perm=[0, 2, 3, 1])
        vt = g.op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [qt, kt]), scale]), bias])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), vt])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
        x = _layer_norm(g, g.op("Add", [_linear(g, ctx, w, p + "attention.output.dense"), x]), w,
                        p + "attention.output.LayerNorm", cfg.layer_norm_eps)
        inter = _linear(g, x, w, p + "intermediate.dense")
        # Exact (erf) GELU, as BERT uses; ORT fuses this pattern into one Gelu kernel.
        erf = g.op("Erf", [g.op("Div", [inter, sqrt2])])
        gelu = g.op("Mul", [g.op("Mul", [inter, half]), g.op("Add", [erf, one])])
        x = _layer_norm(g, g.op("Add", [_linear(g, gelu, w, p + "output.dense"), x]), w,
                        p + "output.LayerNorm", cfg.layer_norm_eps)
    return x


@dataclasses.dataclass(frozen=True)
class Spans:
    """Localised scoring inside the graph: besides the whole window, the encoder's token
    states are mean-pooled over spans of ``width`` tokens every ``stride`` tokens (one forward
    pass), plus, for each ``(width, stride)`` in ``finer``, spans of that size too; a span
    with fewer than ``min_tokens`` real tokens (a window's ragged tail) is ignored. With a
    head, the graph scores every unit and outputs the logits ``[0, m]`` where ``m`` is the
    largest attack-minus-benign margin over the units, so a softmax gives the most
    suspicious unit's attack probability and the runtime needs no change. Padding around an
    attack then cannot dilute it: some span holds mostly the attack."""

    width: int = 64
    stride: int = 32
    min_tokens: int = 16
    finer: tuple[tuple[int, int], ...] = ()

    def scales(self) -> list[tuple[int, int]]:
        return [(self.width, self.stride), *self.finer]

    def starts(self, window: int) -> list[tuple[int, int]]:
        """(start, width) of every span within a window of ``window`` tokens."""
        return [(s, w) for w, st in self.scales()
                for s in range(0, max(window - w, 0) + 1, st)]

    def as_meta(self) -> dict[str, str]:
        """The head ``meta`` entries that :meth:`from_meta` reads back."""
        meta = {"span_width": str(self.width), "span_stride": str(self.stride),
                "span_min_tokens": str(self.min_tokens)}
        if self.finer:
            meta["span_finer"] = ",".join(f"{w}/{st}" for w, st in self.finer)
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> Spans | None:
        """The spans a head was trained for (its ``meta``), or None for whole windows."""
        if "span_width" not in meta:
            return None
        finer = tuple((int(w), int(st)) for w, _, st in
                      (f.partition("/") for f in meta.get("span_finer", "").split(",") if f))
        return cls(int(meta["span_width"]), int(meta["span_stride"]),
                   int(meta["span_min_tokens"]), finer)


def _units(g: _Graph, x: str, mask_f: str, spans: Spans, window: int) -> tuple[str, str]:
    """Mean-pooled, L2-normalised units ``[B, 1 + K, H]`` (unit 0 = the whole window, then K
    spans) and their real-token counts ``[B, 1 + K]``."""
    f32, i64 = np.float32, np.int64
    starts = spans.starts(window)
    pool = np.zeros((window, len(starts)), f32)
    for k, (s, w) in enumerate(starts):
        pool[s : s + w, k] = 1.0
    pool = np.concatenate([np.ones((window, 1), f32), pool], axis=1)  # unit 0: whole window
    seq_len = g.op("Shape", ["attention_mask"], start=1, end=2)
    pool_s = g.op("Slice", [g.const("span_pool", pool), g.const("zero_1", np.array([0], i64)),
                            seq_len, g.const("zero_ax", np.array([0], i64))])
    xm = g.op("Mul", [x, g.op("Unsqueeze", [mask_f, g.const("ax2u", np.array([2], i64))])])
    summed = g.op("Transpose", [g.op("MatMul", [g.op("Transpose", [xm], perm=[0, 2, 1]),
                                                pool_s])], perm=[0, 2, 1])  # [B, U, H]
    count = g.op("MatMul", [mask_f, pool_s])  # [B, U]
    denom = g.op("Max", [g.op("Unsqueeze", [count, g.const("ax2c", np.array([2], i64))]),
                         g.const("eps_cnt_u", np.array(1e-9, f32))])
    pooled = g.op("Div", [summed, denom])
    norm = g.op("Max", [g.op("ReduceL2", [pooled], axes=[2], keepdims=1),
                        g.const("eps_norm_u", np.array(1e-12, f32))])
    return g.op("Div", [pooled, norm]), count


def bert_graph(cfg: BertConfig, w: Weights, head: Head | None = None, *,
               fp16: bool = False, fused: bool = False, spans: Spans | None = None,
               window: int = 256) -> onnx.ModelProto:
    """Build the ONNX model for ``cfg``/``w`` (+ optional head); see the module docstring.

    With ``fp16`` the embeddings and encoder weights and activations are float16 (half the
    size, tensor-core speed on a GPU); pooling and the head stay float32, and the inputs and
    outputs are the same as the float32 graph's. With ``fused`` each encoder layer is built
    from onnxruntime's fused transformer kernels (contrib ops: the graph then needs
    onnxruntime) instead of standard ONNX ops.
    """
    g = _Graph(np.float16 if fp16 else np.float32)
    f32 = np.float32
    i64 = np.int64
    compute = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    # Embeddings: word + position + token type 0 (single-segment input).
    word_emb = g.fconst("word_emb", w["embeddings.word_embeddings.weight"])
    word = g.op("Gather", [word_emb, "input_ids"])
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("one_i", np.array(1, i64))],
                   axis=0)
    pos_ids = g.op("Range", [g.const("zero_i", np.array(0, i64)), seq_len, "one_i"])
    pos = g.op("Gather", [g.fconst("pos_emb", w["embeddings.position_embeddings.weight"]),
                          pos_ids])
    typ = g.fconst("type0_emb", w["embeddings.token_type_embeddings.weight"][0])
    x = g.op("Add", [g.op("Add", [word, pos]), typ])
    x = _layer_norm(g, x, w, "embeddings.LayerNorm", cfg.layer_norm_eps)

    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    x = (_fused_layers(g, x, w, cfg) if fused
         else _standard_layers(g, x, w, cfg, mask_f, compute))

    if fp16:
        x = g.op("Cast", [x], to=TensorProto.FLOAT)
    if spans is not None:
        return _span_graph(g, cfg, x, mask_f, spans, window, head, fused)
    # Mean pooling over real tokens, then L2 normalisation (float32).
    m3 = g.op("Unsqueeze", [mask_f, g.const("ax2", np.array([2], i64))])
    ax1 = g.const("ax1", np.array([1], i64))
    summed = g.op("ReduceSum", [g.op("Mul", [x, m3]), ax1], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [m3, ax1], keepdims=0),
                         g.const("eps_cnt", np.array(1e-9, f32))])
    pooled = g.op("Div", [summed, count])
    norm = g.op("Max", [g.op("ReduceL2", [pooled], axes=[1], keepdims=1),
                        g.const("eps_norm", np.array(1e-12, f32))])
    emb = g.op("Div", [pooled, norm])

    batch, seq = "batch", "sequence"
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, [batch, seq])
              for name in ("input_ids", "attention_mask")]
    if head is None:
        g.nodes.append(helper.make_node("Identity", [emb], ["embeddings"], name="out"))
        outputs = [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT,
                                                 [batch, cfg.hidden_size])]
    else:
        h = emb
        if head.w1.size:
            h = g.op("Relu", [g.op("Add", [g.op("MatMul", [h, g.const("head.w1", head.w1)]),
                                           g.const("head.b1", head.b1)])])
        logits = g.op("Add", [g.op("MatMul", [h, g.const("head.w2", head.w2)]),
                              g.const("head.b2", head.b2)])
        g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="out"))
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                 [batch, len(head.labels)])]
    graph = helper.make_graph(g.nodes, "infershield_bert", inputs, outputs, g.inits)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(MS, 1)] if fused else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="infershield")
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def _span_graph(g: _Graph, cfg: BertConfig, x: str, mask_f: str, spans: Spans, window: int,
                head: Head | None, fused: bool) -> onnx.ModelProto:
    """The outputs of a span-pooling graph (see :class:`Spans`): ``units`` + ``unit_tokens``
    without a head; with one, ``logits`` ``[B, 2]`` of the most suspicious unit first and the
    per-unit ``unit_logits`` ``[B, U, 2]`` second."""
    f32, i64 = np.float32, np.int64
    units, count = _units(g, x, mask_f, spans, window)
    batch, seq = "batch", "sequence"
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, [batch, seq])
              for name in ("input_ids", "attention_mask")]
    if head is None:
        g.nodes.append(helper.make_node("Identity", [units], ["units"], name="out"))
        g.nodes.append(helper.make_node("Identity", [count], ["unit_tokens"], name="out_n"))
        outputs = [helper.make_tensor_value_info("units", TensorProto.FLOAT,
                                                 [batch, "units", cfg.hidden_size]),
                   helper.make_tensor_value_info("unit_tokens", TensorProto.FLOAT,
                                                 [batch, "units"])]
    else:
        if len(head.labels) != 2:
            raise ConfigError("span pooling needs a two-label head (benign, attack)")
        h = units
        if head.w1.size:
            h = g.op("Relu", [g.op("Add", [g.op("MatMul", [h, g.const("head.w1", head.w1)]),
                                           g.const("head.b1", head.b1)])])
        per_unit = g.op("Add", [g.op("MatMul", [h, g.const("head.w2", head.w2)]),
                                g.const("head.b2", head.b2)])  # [B, U, 2]
        # Attack-minus-benign margin per unit; a ragged span (too few tokens) is pushed far
        # below any threshold, the whole window (unit 0) always counts.
        attack = 0 if head.labels[0].lower() not in ("benign", "safe") else 1
        sign = np.array([-1.0, 1.0] if attack == 1 else [1.0, -1.0], f32)
        margin = g.op("ReduceSum", [g.op("Mul", [per_unit, g.const("margin_sign", sign)]),
                                    g.const("ax_last", np.array([2], i64))], keepdims=0)
        floor = np.full(count_units := 1 + len(spans.starts(window)), float(spans.min_tokens),
                        f32)
        floor[0] = 0.0
        short = g.op("Cast", [g.op("Less", [count, g.const("unit_floor", floor)])],
                     to=TensorProto.FLOAT)
        margin = g.op("Sub", [margin, g.op("Mul", [short, g.const("big_m",
                                                                  np.array(1e4, f32))])])
        best = g.op("ReduceMax", [margin], axes=[1], keepdims=1)  # [B, 1]
        zero = g.op("Mul", [best, g.const("zero_f", np.array(0.0, f32))])
        pair = [best, zero] if attack == 0 else [zero, best]
        logits = g.op("Concat", pair, axis=1)
        g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="out"))
        g.nodes.append(helper.make_node("Identity", [per_unit], ["unit_logits"], name="out_u"))
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2]),
                   helper.make_tensor_value_info("unit_logits", TensorProto.FLOAT,
                                                 [batch, count_units, 2])]
    graph = helper.make_graph(g.nodes, "infershield_bert_spans", inputs, outputs, g.inits)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(MS, 1)] if fused else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="infershield")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


#: What an int8 build's ``config.json`` records (``infershield.int8``), so that builds of an
#: older scheme are told apart and rebuilt.
INT8_SCHEME = "weights per channel, activations per token"


def quantize_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its MatMul weights quantised to int8 per output channel and its
    activations quantised at run time per token
    (:func:`~infershield.detectors.quantization.per_token_activations`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = _DropPreprocessingHint()
    root.addFilter(quiet)  # its advice (a shape-inference pre-pass) does not apply here
    try:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "model.int8.onnx"
            # Per-channel scales keep scores close to float32 (mean |diff| 0.02 against 0.07
            # per-tensor on our fixtures); reduce_range avoids int16 saturation on CPUs
            # without VNNI. The fused contrib ops defeat shape inference: outputs are float32.
            # Attention stays float32: QAttention takes one input scale per tensor.
            quantize_dynamic(model, out, weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True, op_types_to_quantize=["MatMul", "Gather"],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            return per_token_activations(onnx.load(str(out)))
    finally:
        root.removeFilter(quiet)


class _DropPreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _write_dir(out_dir: Path, models: dict[str, onnx.ModelProto],
               config: dict[str, object]) -> Path:
    """Write the models (file name -> graph) + tokenizer.json + config.json atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for file_name, model in models.items():
        onnx.save_model(model, str(tmp / file_name))
    shutil.copyfile(minilm_dir() / "tokenizer.json", tmp / "tokenizer.json")
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def export_minilm(out_dir: Path, *, head: Head | None, window: int = 256,
                  encoder: EncoderOverride | None = None, fp16: bool = False,
                  int8: bool = False, spans: Spans | None = None) -> Path:
    """Export all-MiniLM-L6-v2 to ``out_dir`` (model.onnx, tokenizer.json, config.json).

    Without ``head`` the model outputs sentence embeddings; with it, classification logits and
    a Hugging Face-style ``config.json`` (``id2label``) that
    :class:`~infershield.detectors.runtime.SequenceClassifier` loads. ``window`` is the token
    window the runtime uses (sentence-transformers trained MiniLM on 256 tokens).
    ``encoder`` replaces base weights by name (fine-tuned layers; every name and shape must
    exist in the base model) and may keep only the first layers. ``fp16`` also writes
    ``model_fp16.onnx`` (float16 encoder of fused onnxruntime kernels), which the runtime
    uses on the CUDA EP when asked. ``int8`` makes ``model.onnx`` itself the CPU-speed
    variant: onnxruntime's fused kernels with int8 weights and per-token activations
    (:func:`quantize_int8`); its scores move a little, so choose thresholds on it.
    ``spans`` (default: what the head's ``meta`` records, if anything) scores short spans of
    each window as well as the whole window and outputs the most suspicious one's logits.
    """
    if spans is None and head is not None:
        spans = Spans.from_meta(head.meta)
    cfg, weights = load_bert(minilm_dir())
    if encoder is not None:
        for name, arr in encoder.weights.items():
            # Pruned layers are smaller; check_layers below checks that each layer fits.
            if name not in weights or weights[name].ndim != arr.ndim:
                raise ConfigError(
                    f"encoder weights: {name} {arr.shape} does not fit the base model")
            weights[name] = arr.astype(np.float32)
        if encoder.num_layers is not None:
            if not 1 <= encoder.num_layers <= cfg.num_hidden_layers:
                raise ConfigError(f"encoder weights: num_hidden_layers {encoder.num_layers} is "
                                  f"not in 1..{cfg.num_hidden_layers}")
            cfg = dataclasses.replace(cfg, num_hidden_layers=encoder.num_layers)
    check_layers(cfg, weights)
    models = {"model.onnx": bert_graph(cfg, weights, head, spans=spans, window=window)}
    if int8:
        models["model.onnx"] = quantize_int8(
            bert_graph(cfg, weights, head, fused=True, spans=spans, window=window))
    if fp16:
        # The GPU twin: float16 and onnxruntime's fused kernels (fewer launches per layer).
        models[FP16_FILE] = bert_graph(cfg, weights, head, fp16=True, fused=True, spans=spans,
                                       window=window)
    config: dict[str, object] = {
        "model_type": "bert",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "attention_heads_per_layer": [layer_heads(cfg, weights, n)
                                      for n in range(cfg.num_hidden_layers)],
        "intermediate_size_per_layer": [
            int(weights[f"encoder.layer.{n}.intermediate.dense.weight"].shape[0])
            for n in range(cfg.num_hidden_layers)],
        "max_position_embeddings": cfg.max_position_embeddings,
        "infershield": {"window": window},
    }
    if head is not None:
        config["id2label"] = {str(i): lab for i, lab in enumerate(head.labels)}
        config["label2id"] = {lab: i for i, lab in enumerate(head.labels)}
        config["architectures"] = ["BertForSequenceClassification"]
        config["infershield"] = {"window": window, "threshold": head.threshold, **head.meta}
    return _write_dir(out_dir, models, config)


def build_embedding_model(out_dir: Path) -> Path:
    """The plain MiniLM sentence-embedding model (no head): the ``local`` backend's demo model."""
    return export_minilm(out_dir, head=None)
