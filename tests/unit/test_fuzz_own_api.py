"""Fuzzing the own API (``infershield.v1.Firewall`` Infer/Scan) down to the backend seam.

Arbitrary wire bytes and arbitrary well-formed requests go through the real servicer and the
real :class:`~infershield.firewall.Firewall` (empty policy, tight limits) in front of an
in-memory echo backend. The property: a request either succeeds or fails with a client-facing
error (InvalidRequest, LimitExceeded, NotFound), never anything else.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from infershield.v1 import firewall_pb2 as fpb
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from infershield.backends.base import Backend
from infershield.backends.tensors import decode_bytes, encode_bytes
from infershield.call import CallContext
from infershield.config import Config, LimitsConfig
from infershield.errors import InvalidRequest, LimitExceeded, NotFound, UpstreamError
from infershield.firewall import Firewall
from infershield.policy import Policy
from infershield.server.firewall_service import FirewallService
from infershield.server.wire import unary_handler

SHORT = 200
LONG = int(os.environ.get("INFERSHIELD_FUZZ_EXAMPLES", "0"))
long_only = pytest.mark.skipif(LONG <= 0, reason="set INFERSHIELD_FUZZ_EXAMPLES (make fuzz)")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALLOWED = (InvalidRequest, LimitExceeded, NotFound)
LIMITS = LimitsConfig(max_request_bytes=4096, max_text_bytes=256, max_batch_elements=4)


class EchoBackend(Backend):
    """Serves one model, ``echo`` (TEXT [1] BYTES -> OUTPUT), as Triton would describe it."""

    kind = "local"

    async def call(self, method: str, request: Any, ctx: CallContext) -> Any:
        name = getattr(request, "name", "") or getattr(request, "model_name", "")
        if name != "echo":
            import grpc

            raise UpstreamError(f"unknown model {name!r}", grpc.StatusCode.NOT_FOUND)
        if method == "ModelMetadata":
            meta = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name="echo",
                inputs=[meta(name="TEXT", datatype="BYTES", shape=[1])],
                outputs=[meta(name="OUTPUT", datatype="BYTES", shape=[1])],
            )
        if method == "ModelConfig":
            return pb.ModelConfigResponse(config=mc.ModelConfig(name="echo"))
        if method == "ModelInfer":
            t = request.inputs[0]
            elems = (
                decode_bytes(request.raw_input_contents[0], "TEXT")
                if request.raw_input_contents
                else list(t.contents.bytes_contents)
            )
            resp = pb.ModelInferResponse(model_name="echo", id=request.id)
            resp.outputs.add(name="OUTPUT", datatype="BYTES", shape=[len(elems)])
            resp.raw_output_contents.append(encode_bytes([b"echo: " + e for e in elems]))
            return resp
        raise AssertionError(method)

    async def stream_infer(  # pragma: no cover - the own API has no stream
        self, requests: AsyncIterator[pb.ModelInferRequest], ctx: CallContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        raise AssertionError("no streams here")
        yield pb.ModelStreamInferResponse()

    async def ready(self) -> bool:
        return True


class FakeContext:
    def time_remaining(self) -> float | None:
        return 5.0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-caller", "fuzz"),)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"


@pytest.fixture(scope="module")
def service() -> FirewallService:
    cfg = Config(limits=LIMITS)
    return FirewallService(Firewall(Policy.from_config(cfg), EchoBackend()))


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
models = st.sampled_from(["echo", "", "nope", "echo\x00"])


@st.composite
def infer_requests(draw: st.DrawFn) -> Any:
    req = fpb.InferRequest(model=draw(models), id=draw(st.text(max_size=5)))
    which = draw(st.sampled_from(["prompt", "messages", "none"]))
    if which == "prompt":
        req.prompt = draw(texts)
    elif which == "messages":
        msgs = req.messages.messages
        for role, content in draw(st.lists(st.tuples(st.text(max_size=8), texts), max_size=4)):
            msgs.add(role=role, content=content)
        req.messages.SetInParent()
    for k, v in draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)).items():
        req.parameters[k] = v
    return req


@st.composite
def scan_requests(draw: st.DrawFn) -> Any:
    return fpb.ScanRequest(
        texts=draw(st.lists(texts, max_size=6)),
        model=draw(models),
        stage=draw(st.sampled_from([0, 1, 2, 7])),
    )


def run(service: FirewallService, method: str, request: Any) -> None:
    try:
        out = asyncio.run(getattr(service, method)(request, FakeContext()))
    except ALLOWED:
        return
    _check(method, request, out)


def _check(method: str, request: Any, out: Any) -> None:
    if method == "Infer":
        assert out.outputs[0].text[0].startswith("echo: ")
    else:
        assert len(out.results) == len(request.texts)


def run_wire(service: FirewallService, method: str, data: bytes) -> None:
    """The bytes through the handler the server registers: its deserializer never raises
    (an unreadable request is refused with InvalidRequest), then the servicer."""
    messages = (fpb.InferRequest, fpb.InferResponse) if method == "Infer" else (
        fpb.ScanRequest, fpb.ScanResponse)
    handler = unary_handler(getattr(service, method), *messages)
    request = handler.request_deserializer(data)
    try:
        out = asyncio.run(handler.unary_unary(request, FakeContext()))
    except ALLOWED:
        return
    _check(method, request, out)


wire = st.one_of(
    st.binary(max_size=200),
    infer_requests().map(lambda r: r.SerializeToString()),
    scan_requests().map(lambda r: r.SerializeToString()),
)


@settings(FUZZ, max_examples=SHORT)
@given(infer_requests())
def test_fuzz_own_api_infer(service: FirewallService, request: Any) -> None:
    run(service, "Infer", request)


@settings(FUZZ, max_examples=SHORT)
@given(scan_requests())
def test_fuzz_own_api_scan(service: FirewallService, request: Any) -> None:
    run(service, "Scan", request)


@settings(FUZZ, max_examples=SHORT)
@given(st.sampled_from(["Infer", "Scan"]), wire)
def test_fuzz_own_api_wire_bytes(service: FirewallService, method: str, data: bytes) -> None:
    run_wire(service, method, data)


@pytest.mark.slow
@long_only
@settings(FUZZ, max_examples=max(LONG, 1))
@given(st.sampled_from(["Infer", "Scan"]), wire)
def test_fuzz_own_api_wire_bytes_long(service: FirewallService, method: str, data: bytes) -> None:
    run_wire(service, method, data)


def test_harness_reaches_the_backend(service: FirewallService) -> None:
    """The fuzz property is only meaningful if valid requests get all the way through."""
    req = fpb.InferRequest(model="echo", prompt="hello")
    out = asyncio.run(service.Infer(req, FakeContext()))
    assert list(out.outputs[0].text) == ["echo: hello"]
    with pytest.raises(LimitExceeded):
        asyncio.run(service.Scan(fpb.ScanRequest(texts=["x"] * 5), FakeContext()))
