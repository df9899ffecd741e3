"""A Triton stand-in for an exported classifier: pytriton's Python backend running the
entry's model.onnx with onnxruntime, under the entry's name, inputs and outputs.

pytriton's bundled tritonserver ships the Python backend only (no ``onnxruntime`` backend
under ``pytriton/tritonserver/backends``), so the repository entry that
``infershield models export-triton`` writes cannot be loaded as is here. The stand-in
(shared with the offload bench) reads the entry's ``config.pbtxt`` for everything the
firewall sees over gRPC.
"""

from __future__ import annotations

from pathlib import Path

from bench.offload_standin import bind_onnx_standin

__all__ = ["bind_onnx_standin", "onnx_backends_available"]


def onnx_backends_available() -> bool:
    """Whether pytriton's tritonserver has an ONNX Runtime backend."""
    import pytriton

    backends = Path(pytriton.__file__).parent / "tritonserver" / "backends"
    return (backends / "onnxruntime").is_dir()
