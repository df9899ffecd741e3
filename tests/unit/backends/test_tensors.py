"""The Triton tensor codec: BYTES framing, validation, text selection and rewriting."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from infershield.backends.tensors import (
    decode_bytes,
    encode_bytes,
    input_array,
    input_texts,
    output_texts,
    raw_array,
    response_outputs,
    rewrite_input,
    validate_request_tensors,
)
from infershield.errors import InvalidRequest


def test_bytes_round_trip() -> None:
    elems = [b"", b"a", "ünï".encode(), b"\x00" * 300]
    assert decode_bytes(encode_bytes(elems), "t", expected=4) == elems


@pytest.mark.parametrize(
    ("buf", "expected", "message"),
    [
        (b"\x01\x00", None, "truncated BYTES length prefix at offset 0"),
        (struct.pack("<I", 5) + b"abc", None, "declares 5 bytes but only 3 remain"),
        (encode_bytes([b"a", b"b"]), 1, "more than the 1 elements"),
        (encode_bytes([b"a"]), 2, "shape declares 2 elements but raw BYTES data holds 1"),
    ],
)
def test_bad_bytes_framing(buf: bytes, expected: int | None, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(")):
        decode_bytes(buf, "input 'T'", expected=expected)


def _req(**kw: object) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(model_name="m", **kw)  # type: ignore[arg-type]


def test_validate_fixed_size_raw_and_typed() -> None:
    req = _req()
    req.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    req.raw_input_contents.append(np.zeros(4, "<f4").tobytes())
    validate_request_tensors(req)
    req.raw_input_contents[0] = b"\x00" * 12
    with pytest.raises(InvalidRequest, match="needs 16 bytes, raw data has 12"):
        validate_request_tensors(req)
    typed = _req()
    typed.inputs.add(name="x", datatype="INT64", shape=[3]).contents.int64_contents.extend([1, 2])
    with pytest.raises(InvalidRequest, match="declares 3 elements but contents hold 2"):
        validate_request_tensors(typed)


@pytest.mark.parametrize(
    ("datatype", "shape", "message"),
    [("STRING", [1], "unknown datatype 'STRING'"), ("BYTES", [-1], "negative dimension")],
)
def test_validate_rejects_datatype_and_shape(
    datatype: str, shape: list[int], message: str
) -> None:
    req = _req()
    req.inputs.add(name="t", datatype=datatype, shape=shape)
    with pytest.raises(InvalidRequest, match=message):
        validate_request_tensors(req)


def test_validate_rejects_mismatched_typed_field_and_raw_count() -> None:
    req = _req()
    req.inputs.add(name="t", datatype="BYTES", shape=[1]).contents.int_contents.append(1)
    with pytest.raises(InvalidRequest, match="int_contents does not match datatype BYTES"):
        validate_request_tensors(req)
    req = _req()
    req.inputs.add(name="a", datatype="BYTES", shape=[1])
    req.inputs.add(name="b", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(encode_bytes([b"x"]))
    with pytest.raises(InvalidRequest, match="2 inputs"):
        validate_request_tensors(req)


def test_text_selection_by_name_and_default() -> None:
    req = _req()
    req.inputs.add(name="prompt", datatype="BYTES", shape=[2])
    req.inputs.add(name="ids", datatype="INT32", shape=[1])
    req.inputs.add(name="tag", datatype="BYTES", shape=[1])
    req.raw_input_contents.extend(
        [encode_bytes([b"a", b"b"]), np.zeros(1, "<i4").tobytes(), encode_bytes([b"t"])]
    )
    assert [(t.name, t.texts) for t in input_texts(req, ())] == [
        ("prompt", ["a", "b"]),
        ("tag", ["t"]),
    ]
    assert [t.name for t in input_texts(req, ("prompt",))] == ["prompt"]
    with pytest.raises(InvalidRequest, match="text tensor but has datatype INT32"):
        input_texts(req, ("ids",))


def test_invalid_utf8_is_refused_and_rewrite_keeps_the_form() -> None:
    req = _req()
    req.inputs.add(name="t", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(encode_bytes([b"\xff"]))
    with pytest.raises(InvalidRequest, match="element 0 is not valid UTF-8"):
        input_texts(req, ())
    req.raw_input_contents[0] = encode_bytes([b"call 555"])
    (t,) = input_texts(req, ())
    rewrite_input(req, t, ["call [X]"])
    assert decode_bytes(req.raw_input_contents[0], "t") == [b"call [X]"]


def test_output_texts_typed_and_numpy_round_trip() -> None:
    resp = pb.ModelInferResponse()
    resp.outputs.add(name="o", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"hi")
    assert [t.texts for t in output_texts(resp, ())] == [["hi"]]
    req = _req()
    req.inputs.add(name="x", datatype="INT16", shape=[2, 1])
    arr = np.array([[3], [-4]], dtype=np.int16)
    req.raw_input_contents.append(raw_array(arr))
    np.testing.assert_array_equal(input_array(req, 0), arr)


def test_response_outputs_decode_raw_and_typed_bytes_for_display() -> None:
    resp = pb.ModelInferResponse(model_name="m")
    resp.outputs.add(name="raw_text", datatype="BYTES", shape=[2])
    resp.outputs.add(name="scores", datatype="FP32", shape=[1])
    resp.raw_output_contents.extend([encode_bytes([b"hi", b"\xff"]), raw_array(np.ones(1, "f4"))])
    raw_text, scores = response_outputs(resp)
    assert (raw_text.name, raw_text.shape, raw_text.text) == ("raw_text", (2,), ("hi", "\ufffd"))
    assert raw_text.raw == resp.raw_output_contents[0]  # the exact bytes, not the display text
    assert scores.raw == np.ones(1, "f4").tobytes() and scores.text == ()

    typed = pb.ModelInferResponse(model_name="m")
    typed.outputs.add(name="t", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"ok")
    (only,) = response_outputs(typed)
    assert only.raw is None and only.text == ("ok",)


def test_response_outputs_name_a_malformed_raw_bytes_output() -> None:
    resp = pb.ModelInferResponse(model_name="m")
    resp.outputs.add(name="bad", datatype="BYTES", shape=[1])
    resp.raw_output_contents.append(b"\x05\x00")
    with pytest.raises(InvalidRequest, match="output 'bad'"):
        response_outputs(resp)
