"""``infershield models export-triton``: the classifier as a Triton model repository entry.

Writes ``DIR/NAME/config.pbtxt`` (ONNX Runtime backend, dynamic batching) and
``DIR/NAME/1/model.onnx`` from the same built model the local runtime loads, so a firewall
with ``classifier.backend: triton`` scores exactly what it would score locally.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from infershield.detectors.quantization import batch_independence
from infershield.errors import ConfigError

#: ONNX tensor element types (onnx.TensorProto) -> Triton config data types.
_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 6: "TYPE_INT32",
                   7: "TYPE_INT64"}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, Triton data type, dims without the batch dim."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def graph_io(onnx_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs; symbolic dims become -1 and the leading (batch) dim
    is dropped, as Triton wants with ``max_batch_size`` > 0."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}

    def spec(vi: onnx.ValueInfoProto) -> TensorSpec:
        t = vi.type.tensor_type
        if t.elem_type not in _ONNX_TO_TRITON:
            raise ConfigError(f"{onnx_path}: tensor {vi.name} has unsupported type {t.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not dims or dims[0] not in (-1, 0):
            raise ConfigError(f"{onnx_path}: tensor {vi.name} has no dynamic batch dimension")
        return TensorSpec(vi.name, _ONNX_TO_TRITON[t.elem_type], tuple(dims[1:]))

    inputs = [spec(i) for i in model.graph.input if i.name not in init]
    return inputs, [spec(o) for o in model.graph.output]


def model_config_text(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], *,
                      max_batch: int = 32, queue_delay_us: int = 100) -> str:
    """``config.pbtxt`` for the ONNX Runtime backend, with dynamic batching."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    if max_batch < 1:
        raise ConfigError("--max-batch: must be >= 1 (dynamic batching needs a batch dim)")
    cfg = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=max_batch)
    for t in inputs:
        cfg.input.add(name=t.name, data_type=mc.DataType.Value(t.data_type), dims=list(t.dims))
    for t in outputs:
        cfg.output.add(name=t.name, data_type=mc.DataType.Value(t.data_type), dims=list(t.dims))
    # Requests from many firewall replicas are merged up to max_batch windows; a short
    # queue delay lets concurrent requests meet without adding much latency to a lone one.
    cfg.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    cfg.version_policy.latest.num_versions = 1
    header = (f"# Written by `infershield models export-triton`: the {name} classifier.\n"
              "# Inputs are padded token windows (batch x tokens); the output is logits.\n")
    body: str = text_format.MessageToString(cfg)
    return header + body


def export_triton(model_dir: Path, out_dir: Path, *, name: str, max_batch: int = 32,
                  version: int = 1) -> Path:
    """Write ``out_dir/name/config.pbtxt`` and ``out_dir/name/<version>/model.onnx`` from the
    model directory ``model_dir``; returns ``out_dir/name``."""
    src = Path(model_dir) / "model.onnx"
    if not src.is_file():
        raise ConfigError(f"classifier model file missing: {src}")
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"--model: not a usable model name: {name!r}")
    inputs, outputs = graph_io(src)
    text = model_config_text(name, inputs, outputs, max_batch=max_batch)
    # Triton batches requests from every replica together, so a row's score must not
    # depend on its batch: per-batch int8 quantisation is rewritten or refused.
    plan = batch_independence(src)
    if plan.one_row:
        raise ConfigError(f"{src}: its int8 quantisation mixes the rows of a batch "
                          f"({plan.why}), and Triton batches requests together; export a "
                          "float model or one quantised per token")
    entry = Path(out_dir) / name
    (entry / str(version)).mkdir(parents=True, exist_ok=True)
    if plan.model is not None:
        import onnx

        onnx.save(plan.model, str(entry / str(version) / "model.onnx"))
    else:
        shutil.copyfile(src, entry / str(version) / "model.onnx")
    (entry / "config.pbtxt").write_text(text, encoding="utf-8")
    return entry
