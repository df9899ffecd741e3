"""Dynamic int8 quantisation whose results do not depend on the batch.

onnxruntime's dynamic quantisation (``quantize_dynamic``) quantises each activation tensor
at run time with one scale for the whole tensor: every row of the batch, padding included.
A window's score then depends on what else is in its batch, and the classifier's
micro-batcher puts different callers' texts in one batch. So one caller's text could move
another caller's verdict.

:func:`per_token_activations` rewrites the graph ``quantize_dynamic`` writes so that each
token (each row of a 2-D input) gets its own scale. :func:`batch_independence` decides what
the runtime does with any model directory's graph: leave it (no per-batch quantisation),
rewrite it, or score one window per forward pass (per-batch ops the rewrite does not cover,
such as ``QAttention`` or ``DynamicQuantizeMatMul``).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Ops whose activation scale is taken over the whole input tensor (so over the batch).
PER_BATCH_OPS = frozenset({
    "DynamicQuantizeLinear",  # the standard op; quantize_dynamic's MatMulInteger inputs
    "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLSTM", "QEmbedLayerNormalization",
})

#: Substrings that every op name above contains (three scans of the file, not five).
_NEEDLES = (b"DynamicQuantize", b"QAttention", b"QEmbedLayerNormalization")


@dataclass(frozen=True)
class Plan:
    """What to do with a graph: ``model`` is the rewritten graph (None: use the file as it
    is); ``one_row`` means its scores depend on the batch and no rewrite covers it."""

    model: onnx.ModelProto | None = None
    one_row: bool = False
    why: str = ""


def batch_independence(path: Path) -> Plan:
    """How to run the model at ``path`` so that a window scores the same in any batch."""
    # A byte search first: most models (every float one) have none of these ops, and
    # parsing a large graph only to find that out would slow every start.
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if not any(data.find(needle) >= 0 for needle in _NEEDLES):
            return Plan()
    model = onnx.load(str(path), load_external_data=False)
    found = sorted({n.op_type for n in model.graph.node if n.op_type in PER_BATCH_OPS})
    if not found:
        return Plan()
    external = any(init.data_location == TensorProto.EXTERNAL for init in model.graph.initializer)
    why = rewritable(model.graph)
    if found == ["DynamicQuantizeLinear"] and not external and not why:
        return Plan(model=per_token_activations(model), why="per-token activation scales")
    reason = ("weights stored outside the graph" if external and not why
              else why or f"{', '.join(found)} (one activation scale per batch)")
    return Plan(one_row=True, why=reason)


def rewritable(graph: onnx.GraphProto) -> str:
    """Why :func:`per_token_activations` cannot rewrite ``graph`` ('' when it can): each
    ``DynamicQuantizeLinear`` must feed only ``MatMulInteger`` (as its A input and A zero
    point), and its scale only one ``Mul(scale, b_scale)``, whose product only scales the
    ``MatMulInteger`` result (``Mul(result, product)``), as ``quantize_dynamic`` writes it."""
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in graph.node:
        for k, name in enumerate(n.input):
            users.setdefault(name, []).append((n, k))
    for n in graph.node:
        if n.op_type != "DynamicQuantizeLinear":
            continue
        q, scale, zero = n.output
        if not all(u.op_type == "MatMulInteger" and k == 0 for u, k in users.get(q, [])):
            return f"{n.name or q}: its values feed something other than MatMulInteger"
        if not all(u.op_type == "MatMulInteger" and k == 2 for u, k in users.get(zero, [])):
            return f"{n.name or q}: its zero point feeds something other than MatMulInteger"
        scale_users = users.get(scale, [])
        if len(scale_users) != 1 or scale_users[0][0].op_type != "Mul" or scale_users[0][1] != 0:
            return f"{n.name or q}: its scale is not used by one Mul(scale, weight scale)"
        product = scale_users[0][0].output[0]
        if not all(u.op_type == "Mul" and k == 1 for u, k in users.get(product, [])):
            return f"{n.name or q}: its scale product is used by something other than a Mul"
    return ""


def per_token_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``quantize_dynamic``'s graph so that no row depends on its batch.

    Each token (each row of a 2-D input) is quantised on its own scale, symmetric about zero
    and stored as uint8 around 128, so ``MatMulInteger`` keeps its fast u8 x s8 kernel with a
    scalar zero point. The scale product ``Mul(a_scale, b_scale)`` is split into two
    multiplications: left whole, onnxruntime fuses it into ``MatMulIntegerToFloat``, which
    reads only the first element of a per-token scale. A graph that is not that pattern
    (:func:`rewritable`) is a ValueError. Modifies and returns ``model``.
    """
    g = model.graph
    why = rewritable(g)
    if why:
        raise ValueError(f"cannot quantise per token: {why}")
    quantized = {n.output[1]: n for n in g.node if n.op_type == "DynamicQuantizeLinear"}
    products = {n.output[0]: (n.input[0], n.input[1]) for n in g.node
                if n.op_type == "Mul" and n.input[0] in quantized}
    nodes: list[onnx.NodeProto] = []
    # ReduceMax takes ``axes`` as an attribute up to opset 17 and as an input from 18 on.
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    axes_input = opset >= 18

    def add(op_type: str, inputs: list[str], output: str, **attrs: Any) -> None:
        nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))

    for n in g.node:
        if n.op_type == "Mul" and n.output[0] in products:
            continue  # replaced at its consumers below
        if n.op_type == "Mul" and n.input[1] in products:
            a_scale, b_scale = products[n.input[1]]
            add("Mul", [n.input[0], b_scale], n.output[0] + "_per_channel")
            add("Mul", [n.output[0] + "_per_channel", a_scale], n.output[0])
        elif n.op_type == "DynamicQuantizeLinear":
            x, (q, scale, zero) = n.input[0], n.output
            add("Abs", [x], q + "_abs")
            if axes_input:
                add("ReduceMax", [q + "_abs", "pt_last_axis"], q + "_absmax", keepdims=1)
            else:
                add("ReduceMax", [q + "_abs"], q + "_absmax", axes=[-1], keepdims=1)
            add("Max", [q + "_absmax", "pt_tiny"], q + "_range")
            add("Div", [q + "_range", "pt_127"], scale)
            add("Div", [x, scale], q + "_scaled")
            add("Round", [q + "_scaled"], q + "_rounded")
            add("Add", [q + "_rounded", "pt_128"], q + "_shifted")
            add("Cast", [q + "_shifted"], q, to=TensorProto.UINT8)
            add("Identity", ["pt_zero_u8"], zero)
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend([
        numpy_helper.from_array(np.array(1e-12, np.float32), "pt_tiny"),
        numpy_helper.from_array(np.array(127.0, np.float32), "pt_127"),
        numpy_helper.from_array(np.array(128.0, np.float32), "pt_128"),
        numpy_helper.from_array(np.array(128, np.uint8), "pt_zero_u8")])
    if axes_input:
        g.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "pt_last_axis"))
    onnx.checker.check_model(model)
    return model

