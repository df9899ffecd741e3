"""Helpers for e2e tests: raw Triton protobuf requests and a raw stub (for trailers)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc


def encode(elems: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elems)


def text_request(
    texts: Sequence[str], *, model: str = "echo", raw: bool = True, name: str = "TEXT"
) -> pb.ModelInferRequest:
    """A batch of ``len(texts)`` rows of shape [1] for the ``echo`` model."""
    req = pb.ModelInferRequest(model_name=model, id="r1")
    t = req.inputs.add(name=name, datatype="BYTES", shape=[len(texts), 1])
    data = [s.encode("utf-8") for s in texts]
    if raw:
        req.raw_input_contents.append(encode(data))
    else:
        t.contents.bytes_contents.extend(data)
    return req


def stub(url: str) -> tuple[grpc.Channel, pb_grpc.GRPCInferenceServiceStub]:
    ch = grpc.insecure_channel(url)
    return ch, pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]
