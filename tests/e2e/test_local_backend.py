"""The embedded ``local`` backend: Triton's API without Triton, screened the same way."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as tg
import yaml
from infershield.v1 import firewall_pb2 as fpb
from infershield.v1 import firewall_pb2_grpc as fpb_grpc
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from e2e.helpers import stub
from firewall_support import INJECTION, config_data, free_port, write_config
from infershield.server.app import ServerThread

pytestmark = pytest.mark.e2e


def _double_model(repo: Path) -> None:
    """A tiny numeric model: y = 2 * x, x FP32 [batch, 3]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (repo / "double" / "1").mkdir(parents=True)
    onnx.save_model(model, str(repo / "double" / "1" / "model.onnx"))
    (repo / "double" / "config.yaml").write_text(yaml.safe_dump({"max_batch_size": 4}))


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded default repository (MiniLM), as `make serve` runs it, with the test policy."""
    cfg = write_config(
        tmp_path_factory.mktemp("local") / "config.yaml", config_data(f"127.0.0.1:{free_port()}")
    )
    st = ServerThread(cfg)
    yield f"127.0.0.1:{st.start()}"
    st.stop(grace=0.5)


def _texts(rows: list[str]) -> tg.InferInput:
    inp = tg.InferInput("TEXT", [len(rows), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[r.encode()] for r in rows], dtype=object))
    return inp


def test_builtin_model_answers_like_triton(builtin: str) -> None:
    with tg.InferenceServerClient(builtin) as c:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("minilm")
        meta = c.get_model_metadata("minilm", as_json=True)
        assert meta["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": ["-1", "1"]}]
        assert meta["outputs"] == [
            {"name": "embeddings", "datatype": "FP32", "shape": ["-1", "384"]}
        ]
        config = c.get_model_config("minilm", as_json=True)["config"]
        assert config["max_batch_size"] == 64 and config["input"][0]["data_type"] == "TYPE_STRING"
        res = c.infer(
            "minilm",
            [
                _texts(
                    ["a cat sits on the mat", "a kitten on a rug", "quarterly tax filing deadline"]
                )
            ],
        )
        emb = res.as_numpy("embeddings")
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # A real sentence encoder: the two cat sentences are closer than cat vs tax.
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_builtin_blocks_and_refuses_bad_input(builtin: str) -> None:
    with tg.InferenceServerClient(builtin) as c:
        with pytest.raises(InferenceServerException) as exc:
            c.infer("minilm", [_texts(["fine", INJECTION])])
        assert exc.value.status() == "StatusCode.PERMISSION_DENIED"
        with pytest.raises(InferenceServerException) as exc:
            c.infer("gpt-17", [_texts(["hi"])])
        assert exc.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as exc:
            c.unload_model("minilm")
        assert exc.value.status() == "StatusCode.PERMISSION_DENIED"
        assert c.infer("minilm", [_texts(["still serving"])]).as_numpy("embeddings").shape == (
            1,
            384,
        )


def test_builtin_streaming(builtin: str) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with tg.InferenceServerClient(builtin) as c:
        c.start_stream(callback=lambda result, error: results.put((result, error)))
        c.async_stream_infer("minilm", [_texts(["hello"])], request_id="1")
        c.async_stream_infer("minilm", [_texts([INJECTION])], request_id="2")
        got = [results.get(timeout=30) for _ in range(2)]
        c.stop_stream()
    ok = [r for r, e in got if e is None]
    errors = [str(e) for _, e in got if e is not None]
    assert [r.get_response().id for r in ok] == ["1"]
    assert ok[0].as_numpy("embeddings").shape == (1, 384)
    assert len(errors) == 1 and "PERMISSION_DENIED" in errors[0]


def test_own_api_infer_on_builtin(builtin: str) -> None:
    with grpc.insecure_channel(builtin) as ch:
        resp = fpb_grpc.FirewallStub(ch).Infer(
            fpb.InferRequest(model="minilm", prompt="what a lovely day"), timeout=30
        )
    (out,) = resp.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("embeddings", "FP32", [1, 384])
    vec = np.frombuffer(out.raw_contents, dtype="<f4")
    assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4


def test_custom_repository_numeric_model(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _double_model(repo)
    cfg = write_config(
        tmp_path / "c.yaml",
        config_data(f"127.0.0.1:{free_port()}", backend={"model_repository": str(repo)}),
    )
    st = ServerThread(cfg)
    url = f"127.0.0.1:{st.start()}"
    try:
        with tg.InferenceServerClient(url) as c:
            x = tg.InferInput("x", [2, 3], "FP32")
            x.set_data_from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
            y = c.infer("double", [x]).as_numpy("y")
            assert y.tolist() == [[0, 2, 4], [6, 8, 10]]
        req = pb.ModelInferRequest(model_name="double")
        req.inputs.add(name="x", datatype="FP32", shape=[5, 3]).contents.fp32_contents.extend(
            [1.0] * 15
        )
        ch, s = stub(url)
        with ch, pytest.raises(grpc.RpcError) as err:
            s.ModelInfer(req, timeout=10)
        e: Any = err.value
        assert e.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "batch size must be 1..4" in e.details()
    finally:
        st.stop(grace=0.5)
