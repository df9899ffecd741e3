"""The bad-input table: each malformed request gets a clear status, nothing reaches Triton,
and the firewall keeps serving."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from e2e.helpers import encode, stub, text_request
from firewall_support import TritonHandle, config_data, free_port, write_config
from infershield.server.app import ServerThread

pytestmark = pytest.mark.e2e
MAX_REQUEST_BYTES = 4096


@pytest.fixture(scope="module")
def shield(triton: TritonHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cfg = write_config(
        tmp_path_factory.mktemp("bad") / "config.yaml",
        config_data(
            f"127.0.0.1:{free_port()}",
            upstream=f"triton://{triton.url}",
            limits={"max_request_bytes": MAX_REQUEST_BYTES},
        ),
    )
    st = ServerThread(cfg)
    yield f"127.0.0.1:{st.start()}"
    st.stop(grace=0.5)


def _raw(elems: bytes, shape: list[int]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="echo")
    req.inputs.add(name="TEXT", datatype="BYTES", shape=shape)
    req.raw_input_contents.append(elems)
    return req


def _wrong_datatype() -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="echo")
    req.inputs.add(name="TEXT", datatype="INT32", shape=[1, 1]).contents.int_contents.append(7)
    return req


def _unknown_model() -> pb.ModelInferRequest:
    req = text_request(["hello"])
    req.model_name = "no_such_model"
    return req


def _missing_input() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="echo")


CASES: list[tuple[str, Callable[[], pb.ModelInferRequest], grpc.StatusCode, str]] = [
    ("wrong datatype", _wrong_datatype, grpc.StatusCode.INVALID_ARGUMENT, "datatype INT32"),
    (
        "shape mismatch",
        lambda: _raw(encode([b"a"]), [2, 1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "shape declares 2 elements",
    ),
    (
        "truncated length prefix",
        lambda: _raw(b"\x05\x00", [1, 1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "truncated BYTES length prefix",
    ),
    (
        "overlong length prefix",
        lambda: _raw(b"\xff\x00\x00\x00abc", [1, 1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "declares 255 bytes",
    ),
    (
        "invalid utf-8",
        lambda: _raw(encode([b"ok \xff\xfe"]), [1, 1]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not valid UTF-8",
    ),
    ("unknown model", _unknown_model, grpc.StatusCode.NOT_FOUND, "unknown model 'no_such_model'"),
    ("missing input", _missing_input, grpc.StatusCode.INVALID_ARGUMENT, "missing input(s) TEXT"),
    (
        "oversize message",
        lambda: text_request(["x" * (2 * MAX_REQUEST_BYTES)]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "max_request_bytes",
    ),
]


@pytest.mark.parametrize(("case", "make", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_upstream(
    triton: TritonHandle,
    shield: str,
    case: str,
    make: Callable[[], pb.ModelInferRequest],
    code: grpc.StatusCode,
    message: str,
) -> None:
    before = triton.settled_count("echo")
    ch, via = stub(shield)
    with ch:
        with pytest.raises(grpc.RpcError) as err:
            via.ModelInfer(make(), timeout=10)
        e: Any = err.value
        assert e.code() is code, e.details()
        assert message in e.details()
        # Still serving.
        ok = via.ModelInfer(text_request(["still fine"]), timeout=10)
    assert ok.outputs[0].name == "OUTPUT"
    # The benign follow-up is the only inference Triton saw.
    assert triton.settled_count("echo", before + 1) == before + 1
