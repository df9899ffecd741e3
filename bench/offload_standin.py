"""Serve an ``infershield models export-triton`` entry from pytriton until stopped.

``python -m bench.offload_standin ENTRY PORT``: pytriton's tritonserver has only the Python
backend, so this stands in for Triton's ONNX Runtime backend: the entry's model.onnx runs in
onnxruntime under the entry's name, inputs, outputs and max_batch_size (from config.pbtxt).
A separate process, so the firewall's own process does none of the model's work. The e2e
tests bind the same stand-in (:func:`bind_onnx_standin`) into their own pytriton.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {"TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_FP32": np.float32}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bind_onnx_standin(entry: Path) -> Callable[[Any], None]:
    """A function that binds ``entry`` (DIR/NAME written by export-triton) to a pytriton
    ``Triton``: its model.onnx in onnxruntime, under the entry's name, inputs and outputs."""
    import onnxruntime as ort
    from google.protobuf import text_format
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from tritonclient.grpc import model_config_pb2 as mc

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


def serve(entry: Path, port: int) -> None:
    """Serve ``entry`` on 127.0.0.1:``port`` until SIGTERM."""
    from pytriton.triton import Triton, TritonConfig

    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"
    tcfg = TritonConfig(grpc_address="127.0.0.1", grpc_port=port, http_address="127.0.0.1",
                        http_port=_free_port(), allow_metrics=False, exit_timeout_secs=5)
    with tempfile.TemporaryDirectory(prefix="bench-standin-") as ws:
        t = Triton(config=tcfg, workspace=str(Path(ws) / "ws"))
        bind_onnx_standin(entry)(t)
        t.run()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("ready", flush=True)
        stop.wait()
        t.stop()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
