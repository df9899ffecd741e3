"""A Triton stand-in for an exported classifier: pytriton's Python backend running the
entry's model.onnx with onnxruntime, under the entry's name, inputs and outputs.

pytriton's bundled tritonserver ships the Python backend only (no ``onnxruntime`` backend
under ``pytriton/tritonserver/backends``), so the repository entry that
``infershield models export-triton`` writes cannot be loaded as is here. The stand-in reads
the entry's ``config.pbtxt`` for everything the firewall sees over gRPC.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

_DTYPES = {"TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_FP32": np.float32}


def onnx_backends_available() -> bool:
    """Whether pytriton's tritonserver has an ONNX Runtime backend."""
    import pytriton

    backends = Path(pytriton.__file__).parent / "tritonserver" / "backends"
    return (backends / "onnxruntime").is_dir()


def bind_onnx_standin(entry: Path) -> Callable[[Any], None]:
    """``run_triton(bind=...)`` that serves ``entry`` (DIR/NAME of export-triton)."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    cfg = text_format.Parse((entry / "config.pbtxt").read_text(encoding="utf-8"),
                            mc.ModelConfig())
    sess = ort.InferenceSession(str(entry / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    outputs = [o.name for o in cfg.output]

    def infer(**feeds: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, sess.run(outputs, feeds), strict=True))

    def spec(t: Any) -> Any:
        return Tensor(name=t.name, dtype=_DTYPES[mc.DataType.Name(t.data_type)],
                      shape=tuple(t.dims))

    def bind(t: Any) -> None:
        t.bind(
            model_name=cfg.name,
            infer_func=batch(infer),
            inputs=[spec(i) for i in cfg.input],
            outputs=[spec(o) for o in cfg.output],
            config=ModelConfig(
                max_batch_size=cfg.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=cfg.dynamic_batching.max_queue_delay_microseconds),
            ),
            strict=True,
        )

    return bind
