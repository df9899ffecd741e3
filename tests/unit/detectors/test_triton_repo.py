"""``models export-triton``: the config.pbtxt parses back and matches the ONNX graph."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from infershield.cli import main
from infershield.detectors.triton_repo import export_triton, graph_io
from infershield.errors import ConfigError
from tiny_model import build_tiny_classifier  # type: ignore[import-not-found]

_ORT_TO_TRITON = {"tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32",
                  "tensor(float)": "TYPE_FP32"}


def _parse(entry: Path) -> mc.ModelConfig:
    return text_format.Parse((entry / "config.pbtxt").read_text(encoding="utf-8"),
                             mc.ModelConfig())


def _dims(shape: list[object]) -> list[int]:
    """onnxruntime's shape without the batch dim; symbolic dims as Triton's -1."""
    return [d if isinstance(d, int) else -1 for d in shape[1:]]


def _assert_matches_graph(cfg: mc.ModelConfig, onnx_path: Path) -> None:
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for got, want in ((cfg.input, sess.get_inputs()), (cfg.output, sess.get_outputs())):
        assert [t.name for t in got] == [t.name for t in want]
        for t, w in zip(got, want, strict=True):
            assert mc.DataType.Name(t.data_type) == _ORT_TO_TRITON[w.type]
            assert list(t.dims) == _dims(w.shape)


def test_tiny_model_entry_parses_back(tmp_path: Path) -> None:
    src = build_tiny_classifier(tmp_path / "tiny")
    entry = export_triton(src, tmp_path / "repo", name="tiny", max_batch=8)
    cfg = _parse(entry)
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("tiny", "onnxruntime_onnx", 8)
    assert cfg.HasField("dynamic_batching")
    assert (entry / "1" / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()
    _assert_matches_graph(cfg, entry / "1" / "model.onnx")
    assert [t.name for t in cfg.output] == ["logits"]
    assert list(cfg.output[0].dims) == [3]  # BENIGN, INJECTION, JAILBREAK


def test_shipped_model_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI exports the shipped classifier (built into the cache on first use)."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"cache_dir: {tmp_path / 'cache'}\n", encoding="utf-8")
    assert main(["models", "export-triton", str(tmp_path / "repo"), "--config", str(cfg_file),
                 "--max-batch", "16"]) == 0
    entry = tmp_path / "repo" / "injection-minilm"
    assert str(entry) in capsys.readouterr().out
    cfg = _parse(entry)
    assert cfg.max_batch_size == 16
    assert {t.name for t in cfg.input} >= {"input_ids", "attention_mask"}
    assert all(list(t.dims) == [-1] for t in cfg.input)  # any window length
    built = tmp_path / "cache" / "models" / "injection-minilm" / "model.onnx"
    assert (entry / "1" / "model.onnx").read_bytes() == built.read_bytes()
    _assert_matches_graph(cfg, entry / "1" / "model.onnx")


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    src = build_tiny_classifier(tmp_path / "tiny")
    with pytest.raises(ConfigError, match="max-batch"):
        export_triton(src, tmp_path / "repo", name="tiny", max_batch=0)
    with pytest.raises(ConfigError, match="model name"):
        export_triton(src, tmp_path / "repo", name="a/b")
    with pytest.raises(ConfigError, match="missing"):
        export_triton(tmp_path, tmp_path / "repo", name="x")


def test_graph_io_drops_the_batch_dim(tmp_path: Path) -> None:
    inputs, outputs = graph_io(build_tiny_classifier(tmp_path / "tiny") / "model.onnx")
    assert [(t.name, t.data_type, t.dims) for t in inputs] == [
        ("input_ids", "TYPE_INT64", (-1,)), ("attention_mask", "TYPE_INT64", (-1,)),
        ("token_type_ids", "TYPE_INT64", (-1,))]
    assert [(t.name, t.data_type, t.dims) for t in outputs] == [("logits", "TYPE_FP32", (3,))]
