"""Lean forwarding of ModelInfer: the caller's bytes go upstream, the backend's bytes come
back, unless screening rewrote the message (then the rewritten message goes on)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from e2e.helpers import encode, text_request
from firewall_support import (
    INJECTION,
    LEAK,
    TEST_POLICY,
    assert_refused_unparseable,
    firewall_in_front,
    free_port,
)

METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
#: The test policy, with an output check that also redacts a phrase.
POLICY = {
    **TEST_POLICY,
    "output": [
        {"type": "test_keywords", "name": "leaks",
         "options": {"block": [LEAK], "redact": ["555-0199"]}},
    ],
}


def _noncanonical(*parts: Any) -> bytes:
    """Messages concatenated: protobuf merges them into one message, but serialising that
    message again writes its fields in field-number order, so the bytes differ."""
    return b"".join(p.SerializeToString() for p in parts)


def _request(text: str) -> tuple[bytes, pb.ModelInferRequest]:
    body = pb.ModelInferRequest(model_name="echo")
    body.inputs.add(name="TEXT", datatype="BYTES", shape=[1, 1])
    body.raw_input_contents.append(encode([text.encode()]))
    data = _noncanonical(pb.ModelInferRequest(id="r1"), body)
    msg = pb.ModelInferRequest.FromString(data)
    assert msg.SerializeToString() != data  # the test would prove nothing otherwise
    return data, msg


def _response(text: str) -> bytes:
    body = pb.ModelInferResponse(model_name="echo")
    body.outputs.add(name="OUTPUT", datatype="BYTES", shape=[1, 1])
    body.raw_output_contents.append(encode([text.encode()]))
    data = _noncanonical(pb.ModelInferResponse(id="r1"), body)
    assert pb.ModelInferResponse.FromString(data).SerializeToString() != data
    return data


class _Upstream(grpc.GenericRpcHandler):
    """A Triton stand-in on raw bytes: records what ModelInfer received and answers with
    ``reply`` (the schema RPCs answer for the ``echo`` model)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.reply = b""
        self.lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        name = details.method.rpartition("/")[2]
        answers: dict[str, Any] = {
            "ServerReady": pb.ServerReadyResponse(ready=True),
            "ModelMetadata": pb.ModelMetadataResponse(
                name="echo",
                inputs=[
                    pb.ModelMetadataResponse.TensorMetadata(
                        name=n, datatype="BYTES", shape=[-1, 1])
                    for n in ("TEXT", "SYSTEM")
                ],
            ),
            "ModelConfig": pb.ModelConfigResponse(
                config={"input": [{"name": "SYSTEM", "optional": True}]}
            ),
        }
        if name == "ModelInfer":
            return grpc.unary_unary_rpc_method_handler(self._infer)
        if name == "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(self._stream)
        if name in answers:
            data = answers[name].SerializeToString()
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: data)
        return None

    def _infer(self, request: bytes, context: Any) -> bytes:
        with self.lock:
            self.received.append(request)
        return self.reply

    def _stream(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for request in requests:
            with self.lock:
                self.received.append(request)
        yield from ()


@contextlib.contextmanager
def _serving(
    tmp: Path, policy: dict[str, Any], *, port: int = 0, **sections: Any
) -> Iterator[tuple[_Upstream, grpc.Channel]]:
    """The Triton stand-in and a firewall in front of it with ``policy`` (on ``port``, else
    a free one, and with config ``sections``, such as ``limits``)."""
    upstream = _Upstream()
    with firewall_in_front(upstream, tmp / "config.yaml", port=port, policy=policy,
                           **sections) as channel:
        yield upstream, channel


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Upstream, grpc.Channel]]:
    with _serving(tmp_path_factory.mktemp("lean"), POLICY) as served:
        yield served


def _call(lean: tuple[_Upstream, grpc.Channel], data: bytes, reply: bytes) -> tuple[bytes, bytes]:
    upstream, channel = lean
    upstream.reply = reply
    upstream.received.clear()
    got = channel.unary_unary(METHOD)(data, timeout=10)
    (sent,) = upstream.received
    return sent, got


def test_unchanged_request_and_response_pass_as_the_same_bytes(
    lean: tuple[_Upstream, grpc.Channel],
) -> None:
    data, _ = _request("hello there")
    reply = _response("echo: hello there")
    sent, got = _call(lean, data, reply)
    assert sent == data
    assert got == reply


def test_a_redacted_request_goes_upstream_rewritten(
    lean: tuple[_Upstream, grpc.Channel],
) -> None:
    data, _ = _request("call 555-0100 now")
    sent, _ = _call(lean, data, _response("echo"))
    msg = pb.ModelInferRequest.FromString(sent)
    assert msg.raw_input_contents[0] == encode([b"call [REDACTED] now"])
    assert b"555-0100" not in sent


def test_a_blocked_response_never_passes_as_bytes(lean: tuple[_Upstream, grpc.Channel]) -> None:
    data, _ = _request("hello")
    with pytest.raises(grpc.RpcError) as err:
        _call(lean, data, _response(f"echo: {LEAK}"))
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


def test_a_redacted_response_comes_back_rewritten(
    lean: tuple[_Upstream, grpc.Channel],
) -> None:
    data, _ = _request("hello")
    _, got = _call(lean, data, _response("echo: ring 555-0199"))
    msg = pb.ModelInferResponse.FromString(got)
    assert msg.raw_output_contents[0] == encode([b"echo: ring [REDACTED]"])
    assert msg.id == "r1"


def test_an_unreadable_response_is_unavailable_not_internal(
    lean: tuple[_Upstream, grpc.Channel],
) -> None:
    data, _ = _request("hello")
    with pytest.raises(grpc.RpcError) as err:
        _call(lean, data, b"\x0a\xff")  # a length-delimited field cut short
    e: Any = err.value
    assert e.code() is grpc.StatusCode.UNAVAILABLE
    assert "unreadable response" in e.details()


def test_a_request_with_a_planted_canary_goes_upstream_rewritten(tmp_path: Path) -> None:
    policy = {
        **POLICY,
        "canary": True,
        "system_prompt_tensor": "SYSTEM",
        "output": [*POLICY["output"], {"type": "prompt_leak"}],
    }
    with _serving(tmp_path, policy) as served:
        body = pb.ModelInferRequest(model_name="echo")
        for name, text in (("TEXT", b"hello"), ("SYSTEM", b"You are a helpful bot.")):
            body.inputs.add(name=name, datatype="BYTES", shape=[1, 1])
            body.raw_input_contents.append(encode([text]))
        data = _noncanonical(pb.ModelInferRequest(id="r1"), body)
        sent, _ = _call(served, data, _response("echo: hello"))
    assert sent != data
    system = pb.ModelInferRequest.FromString(sent).raw_input_contents[1]
    assert b"You are a helpful bot." in system and len(system) > len(encode([b"x" * 22]))


@pytest.mark.parametrize("method", ["ModelInfer", "ModelMetadata"])
def test_an_unparseable_request_is_invalid_argument_without_internals(
    lean: tuple[_Upstream, grpc.Channel], method: str
) -> None:
    """grpc answers a deserializer's exception with UNKNOWN and the exception's class and
    text; the firewall answers INVALID_ARGUMENT in its own words, and nothing goes upstream."""
    upstream, channel = lean
    upstream.received.clear()
    assert_refused_unparseable(channel, "inference.GRPCInferenceService", method)
    assert not upstream.received


def test_an_unparseable_request_in_a_stream_ends_it_invalid_argument_without_internals(
    lean: tuple[_Upstream, grpc.Channel],
) -> None:
    """ModelStreamInfer parses each request as it is read: one that does not parse ends the
    stream with INVALID_ARGUMENT in the firewall's words, and goes nowhere upstream."""
    upstream, channel = lean
    upstream.received.clear()
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    with pytest.raises(grpc.RpcError) as err:
        list(call(iter([b"\x0a\xff"]), timeout=10))
    e: Any = err.value
    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.details() == "a request of the stream is not a readable ModelInferRequest"
    assert not upstream.received


def _wait_for(done: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_a_caller_quarantined_elsewhere_loses_its_open_stream(tmp_path: Path) -> None:
    """Quarantine is checked as a call starts, and a stream lives on: a caller quarantined by
    blocked calls on another connection must not keep its open ModelStreamInfer. Its next
    request there ends the stream PERMISSION_DENIED, as a new call is refused, and that
    request goes nowhere upstream."""
    limits = {"quarantine_after_blocks": 2, "quarantine_window_s": 60.0, "quarantine_s": 60.0}
    port = free_port()
    with _serving(tmp_path, POLICY, port=port, limits=limits) as (upstream, channel):
        requests: queue.Queue[bytes | None] = queue.Queue()
        stream = channel.stream_stream(STREAM)(iter(requests.get, None), timeout=30)
        try:
            requests.put(text_request(["hello"]).SerializeToString())
            _wait_for(lambda: len(upstream.received) == 1)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as other:
                infer = other.unary_unary(METHOD)
                for _ in range(2):
                    with pytest.raises(grpc.RpcError) as err:
                        infer(text_request([INJECTION]).SerializeToString(), timeout=10)
                    assert "blocked on input" in err.value.details()  # type: ignore[attr-defined]
                with pytest.raises(grpc.RpcError) as err:
                    infer(text_request(["hello"]).SerializeToString(), timeout=10)
                refused: Any = err.value
            assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "quarantined" in refused.details()

            requests.put(text_request(["hello again"]).SerializeToString())
            requests.put(None)
            with pytest.raises(grpc.RpcError) as err:
                list(stream)
        finally:
            requests.put(None)
            stream.cancel()
        e: Any = err.value
        assert e.code() is grpc.StatusCode.PERMISSION_DENIED
        assert e.details().partition("retry in")[0] == refused.details().partition("retry in")[0]
        (sent,) = upstream.received
        assert pb.ModelInferRequest.FromString(sent).raw_input_contents[0] == encode([b"hello"])


def test_the_size_limit_counts_the_bytes_received_not_the_parsed_message(
    tmp_path: Path,
) -> None:
    """Lean forwarding sends the caller's own bytes upstream, so ``max_request_bytes`` must
    count those bytes. A field repeated on the wire is kept once when parsed (the last one
    wins), so the parsed message's ByteSize() is far below what arrived. (Unknown fields
    would not show it: ByteSize() counts them.)"""
    limit = 4096
    data, _ = _request("hello")
    pad = pb.ModelInferRequest(id="p" * 3000).SerializeToString()
    fits, over = pad + data, pad + pad + data
    assert len(fits) <= limit < len(over)
    assert pb.ModelInferRequest.FromString(over).ByteSize() < limit
    with _serving(tmp_path, POLICY, limits={"max_request_bytes": limit}) as served:
        upstream, channel = served
        sent, _ = _call(served, fits, _response("echo"))
        assert sent == fits  # within the limit: forwarded as it came
        upstream.received.clear()
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(METHOD)(over, timeout=10)
        e: Any = err.value
        assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"request is {len(over)} bytes; max_request_bytes is {limit}" in e.details()
        assert not upstream.received
