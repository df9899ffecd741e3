"""Unmodified tritonclient.grpc against InferShield in front of a real Triton."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from e2e.helpers import stub, text_request
from firewall_support import (
    INJECTION,
    LEAK,
    TcpProxy,
    TritonHandle,
    config_data,
    free_port,
    write_config,
)
from infershield.backends.tensors import decode_bytes
from infershield.server.app import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shield(triton: TritonHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """InferShield on a free port, forwarding to the session's Triton."""
    cfg = write_config(
        tmp_path_factory.mktemp("shield") / "config.yaml",
        config_data(f"127.0.0.1:{free_port()}", upstream=f"triton://{triton.url}"),
    )
    st = ServerThread(cfg)
    port = st.start()
    yield f"127.0.0.1:{port}"
    st.stop(grace=0.5)


def _texts(rows: list[str]) -> tg.InferInput:
    inp = tg.InferInput("TEXT", [len(rows), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[r.encode()] for r in rows], dtype=object))
    return inp


def test_health_and_metadata_answer_as_triton_does(triton: TritonHandle, shield: str) -> None:
    with tg.InferenceServerClient(triton.url) as direct, tg.InferenceServerClient(shield) as via:
        assert via.is_server_live() is direct.is_server_live() is True
        assert via.is_server_ready() is direct.is_server_ready() is True
        assert via.is_model_ready("echo") is True
        assert via.get_model_metadata("echo", as_json=True) == direct.get_model_metadata(
            "echo", as_json=True
        )
        assert via.get_model_config("echo", as_json=True) == direct.get_model_config(
            "echo", as_json=True
        )


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_benign_infer_is_byte_for_byte_tritons(
    triton: TritonHandle, shield: str, raw: bool
) -> None:
    req = text_request(["hello", "how are you?", "ünïcode ✓"], raw=raw)
    ch1, direct = stub(triton.url)
    ch2, via = stub(shield)
    with ch1, ch2:
        want = direct.ModelInfer(req, timeout=10)
        got = via.ModelInfer(req, timeout=10)
    assert got.SerializeToString() == want.SerializeToString()
    with tg.InferenceServerClient(shield) as c:
        out = c.infer("echo", [_texts(["hi"])]).as_numpy("OUTPUT")
    assert out.tolist() == [[b"echo: hi"]]


@pytest.mark.parametrize("position", [0, 1, 3])
def test_injection_in_any_batch_element_is_blocked(
    triton: TritonHandle, shield: str, position: int
) -> None:
    rows = ["what is the weather?", "tell me a joke", "summarise this", "translate that"]
    rows[position] = INJECTION
    before = triton.inference_count("echo")
    ch, via = stub(shield)
    with ch, pytest.raises(grpc.RpcError) as err:
        via.ModelInfer(text_request(rows), timeout=10)
    e: Any = err.value
    assert e.code() is grpc.StatusCode.PERMISSION_DENIED
    # By default the caller learns the stage and the category, not the check or its reason.
    assert e.details() == "blocked on input (category: injection)"
    trailers = dict(e.trailing_metadata())
    assert "infershield-blocked-by" not in trailers and "infershield-reason" not in trailers
    assert trailers["infershield-category"] == "injection"
    assert trailers["infershield-stage"] == "input"
    assert triton.inference_count("echo") == before
    with tg.InferenceServerClient(shield) as c, pytest.raises(InferenceServerException) as exc:
        c.infer("echo", [_texts(rows)])
    assert exc.value.status() == "StatusCode.PERMISSION_DENIED"


def test_leaking_output_is_blocked(triton: TritonHandle, shield: str) -> None:
    ch, via = stub(shield)
    with ch, pytest.raises(grpc.RpcError) as err:
        via.ModelInfer(text_request(["fine", f"repeat {LEAK}"]), timeout=10)
    e: Any = err.value
    assert e.code() is grpc.StatusCode.PERMISSION_DENIED
    assert dict(e.trailing_metadata())["infershield-stage"] == "output"
    assert LEAK not in e.details()


def test_redacted_input_reaches_triton_rewritten(shield: str) -> None:
    with tg.InferenceServerClient(shield) as c:
        out = c.infer("echo", [_texts(["call 555-0100 now"])]).as_numpy("OUTPUT")
    assert out.tolist() == [[b"echo: call [REDACTED] now"]]


def test_streaming_passes_benign_and_reports_blocks_in_stream(shield: str) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with tg.InferenceServerClient(shield) as c:
        c.start_stream(callback=lambda result, error: results.put((result, error)))
        c.async_stream_infer("echo", [_texts(["streamed hello"])], request_id="a")
        c.async_stream_infer("echo", [_texts(["ok", INJECTION])], request_id="b")
        c.async_stream_infer("echo", [_texts(["after the block"])], request_id="c")
        got = [results.get(timeout=10) for _ in range(3)]
        c.stop_stream()
    ok = {r.get_response().id: r.as_numpy("OUTPUT").tolist() for r, e in got if e is None}
    errors = [str(e) for r, e in got if e is not None]
    assert ok == {"a": [[b"echo: streamed hello"]], "c": [[b"echo: after the block"]]}
    assert len(errors) == 1 and "PERMISSION_DENIED" in errors[0] and "injection" in errors[0]


def test_admin_rpcs_and_shared_memory_are_denied(triton: TritonHandle, shield: str) -> None:
    with tg.InferenceServerClient(shield) as c:
        for call in (
            lambda: c.unload_model("echo"),
            lambda: c.load_model("echo"),
            lambda: c.register_system_shared_memory("r", "/infershield-x", 64),
        ):
            with pytest.raises(InferenceServerException) as exc:
                call()
            assert exc.value.status() == "StatusCode.PERMISSION_DENIED"
            assert "'admin' role" in str(exc.value)
    with tg.InferenceServerClient(triton.url) as direct:
        assert direct.is_model_ready("echo")
    req = pb.ModelInferRequest(model_name="echo")
    t = req.inputs.add(name="TEXT", datatype="BYTES", shape=[1, 1])
    t.parameters["shared_memory_region"].string_param = "r"
    t.parameters["shared_memory_byte_size"].int64_param = 16
    ch, via = stub(shield)
    with ch, pytest.raises(grpc.RpcError) as err:
        via.ModelInfer(req, timeout=10)
    e: Any = err.value
    assert e.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "allow_shared_memory" in e.details()


def test_upstream_down_is_unavailable_then_recovers(triton: TritonHandle, tmp_path: Path) -> None:
    proxy = TcpProxy(triton.port)
    proxy.up()
    cfg = write_config(
        tmp_path / "c.yaml",
        config_data(f"127.0.0.1:{free_port()}", upstream=f"triton://127.0.0.1:{proxy.port}"),
    )
    st = ServerThread(cfg)
    url = f"127.0.0.1:{st.start()}"
    try:
        with tg.InferenceServerClient(url) as c:
            assert c.infer("echo", [_texts(["up"])]).as_numpy("OUTPUT").tolist() == [[b"echo: up"]]
            proxy.down()
            with pytest.raises(InferenceServerException) as exc:
                c.infer("echo", [_texts(["down"])], client_timeout=10)
            assert exc.value.status() == "StatusCode.UNAVAILABLE"
            proxy.up()
            deadline = time.monotonic() + 15
            while True:
                try:
                    out = c.infer("echo", [_texts(["back"])], client_timeout=5)
                    break
                except InferenceServerException as e:
                    if time.monotonic() > deadline or e.status() != "StatusCode.UNAVAILABLE":
                        raise
                    time.sleep(0.2)
            assert out.as_numpy("OUTPUT").tolist() == [[b"echo: back"]]
    finally:
        st.stop(grace=0.5)
        proxy.close()


def test_shipped_default_policy_in_front_of_triton(triton: TritonHandle, tmp_path: Path) -> None:
    """The real default policy (native rules in, secrets/PII out) with real Triton."""
    from infershield.config import default_policy_path, read_yaml

    policy = read_yaml(default_policy_path())["policy"]
    cfg = write_config(
        tmp_path / "c.yaml",
        config_data(f"127.0.0.1:{free_port()}", upstream=f"triton://{triton.url}", policy=policy),
    )
    st = ServerThread(cfg)
    url = f"127.0.0.1:{st.start()}"
    try:
        with tg.InferenceServerClient(url) as c:
            out = c.infer("echo", [_texts(["What is the capital of France?"])])
            assert out.as_numpy("OUTPUT").tolist() == [[b"echo: What is the capital of France?"]]
        ch, via = stub(url)
        with ch:
            with pytest.raises(grpc.RpcError) as err:
                via.ModelInfer(text_request(["hello", INJECTION]), timeout=10)
            e: Any = err.value
            assert e.code() is grpc.StatusCode.PERMISSION_DENIED
            assert dict(e.trailing_metadata())["infershield-stage"] == "input"
            # The shipped secrets check redacts outputs: the leak never reaches the caller.
            resp = via.ModelInfer(text_request([f"my key is {LEAK}"]), timeout=10)
        (leaked,) = decode_bytes(resp.raw_output_contents[0], "OUTPUT")
        assert LEAK.encode() not in leaked
        assert leaked == b"echo: my key is [REDACTED:aws_access_key]"
    finally:
        st.stop(grace=0.5)
