"""Fuzzing Triton request decoding: arbitrary tensors raise InvalidRequest/LimitExceeded only.

Covers BYTES tensors with 4-byte length prefixes (raw and typed), shape/data agreement, text
selection, UTF-8 decoding and conversion to numpy. Short runs are part of ``make test``;
``make fuzz`` raises the example count through ``INFERSHIELD_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from infershield.backends import tensors
from infershield.errors import InvalidRequest, LimitExceeded

SHORT = 300
LONG = int(os.environ.get("INFERSHIELD_FUZZ_EXAMPLES", "0"))
long_only = pytest.mark.skipif(LONG <= 0, reason="set INFERSHIELD_FUZZ_EXAMPLES (make fuzz)")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALLOWED = (InvalidRequest, LimitExceeded)

datatypes = st.sampled_from([*sorted(tensors.DATATYPES), "STRING", "", "fp32"])
dims = st.one_of(st.integers(-2, 4), st.sampled_from([0, 2**31, 2**62, -(2**63)]))
shapes = st.lists(dims, max_size=3)
elements = st.lists(st.binary(max_size=12) | st.text(max_size=6).map(str.encode), max_size=5)


@st.composite
def raw_bytes_buffer(draw: st.DrawFn) -> bytes:
    """A well-formed BYTES buffer, then possibly damaged (truncated, length lies, junk)."""
    buf = tensors.encode_bytes(draw(elements))
    damage = draw(st.sampled_from(["none", "truncate", "overlong", "junk", "append"]))
    if damage == "truncate" and buf:
        buf = buf[: draw(st.integers(0, len(buf) - 1))]
    elif damage == "overlong":
        buf = struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + buf
    elif damage == "junk":
        buf = draw(st.binary(max_size=40))
    elif damage == "append":
        buf += draw(st.binary(min_size=1, max_size=5))
    return buf


@st.composite
def infer_requests(draw: st.DrawFn) -> Any:
    req = pb.ModelInferRequest(model_name=draw(st.text(max_size=8)))
    n = draw(st.integers(0, 3))
    use_raw = draw(st.booleans())
    for _ in range(n):
        t = req.inputs.add()
        t.name = draw(st.sampled_from(["text", "text", "ids", "", "x"]))
        t.datatype = draw(datatypes)
        t.shape.extend(draw(shapes))
        if draw(st.integers(0, 9)) == 0:
            t.parameters["shared_memory_region"].string_param = "region"
        if use_raw:
            if t.datatype == "BYTES" or draw(st.booleans()):
                req.raw_input_contents.append(draw(raw_bytes_buffer()))
            else:
                req.raw_input_contents.append(draw(st.binary(max_size=32)))
        else:
            field = draw(st.sampled_from(sorted(set(tensors.CONTENTS_FIELD.values()))))
            if field == "bytes_contents":
                t.contents.bytes_contents.extend(draw(elements))
            elif field == "bool_contents":
                t.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=5)))
            elif field in ("fp32_contents", "fp64_contents"):
                getattr(t.contents, field).extend(draw(st.lists(st.floats(width=32), max_size=5)))
            elif field.startswith("uint"):
                getattr(t.contents, field).extend(
                    draw(st.lists(st.integers(0, 2**32 - 1), max_size=5))
                )
            else:
                getattr(t.contents, field).extend(
                    draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5))
                )
    if use_raw and draw(st.integers(0, 9)) == 0:
        req.raw_input_contents.append(b"extra")  # more buffers than inputs
    return req


def decode_request(req: Any, names: tuple[str, ...]) -> None:
    """Everything the firewall does with an incoming request before screening."""
    try:
        req = pb.ModelInferRequest.FromString(req.SerializeToString())  # wire round trip
        tensors.validate_request_tensors(req)
        tensors.uses_shared_memory(req)
        if tensors.uses_shared_memory(req):
            return  # refused (or allowed) by policy before any data is read
        for tt in tensors.input_texts(req, names):
            assert all(isinstance(s, str) for s in tt.texts)
        for i in range(len(req.inputs)):
            tensors.input_array(req, i)
    except ALLOWED:
        pass


def decode_buffer(buf: bytes, expected: int | None) -> None:
    try:
        elems = tensors.decode_bytes(buf, "input 'text'", expected)
    except ALLOWED:
        return
    # Whatever decodes must re-encode to the same buffer (nothing dropped or invented).
    assert tensors.encode_bytes(elems) == buf
    with contextlib.suppress(ALLOWED):
        tensors.decode_text(elems, "input 'text'")


names_strategy = st.sampled_from([(), ("text",), ("ids",)])


def _fp16_typed_empty() -> Any:
    req = pb.ModelInferRequest()
    req.inputs.add(name="text", datatype="FP16", shape=[0]).contents.SetInParent()
    return req


def _empty_but_huge() -> Any:
    req = pb.ModelInferRequest(raw_input_contents=[b""])
    req.inputs.add(name="text", datatype="FP16", shape=[0, 2**62])
    return req


def _int16_out_of_range() -> Any:
    req = pb.ModelInferRequest()
    req.inputs.add(name="ids", datatype="INT16", shape=[1]).contents.int_contents.append(32768)
    return req


@settings(FUZZ, max_examples=SHORT)
@given(infer_requests(), names_strategy)
@example(_fp16_typed_empty(), ())  # found by this fuzzer: a KeyError in input_array
@example(_empty_but_huge(), ())  # found by this fuzzer: numpy "array is too big"
@example(_int16_out_of_range(), ())  # found by this fuzzer: silent wraparound in numpy
def test_fuzz_request_decoding(req: Any, names: tuple[str, ...]) -> None:
    decode_request(req, names)


@settings(FUZZ, max_examples=SHORT)
@given(raw_bytes_buffer(), st.none() | st.integers(0, 6))
def test_fuzz_bytes_prefixes(buf: bytes, expected: int | None) -> None:
    decode_buffer(buf, expected)


@pytest.mark.slow
@long_only
@settings(FUZZ, max_examples=max(LONG, 1))
@given(infer_requests(), names_strategy)
def test_fuzz_request_decoding_long(req: Any, names: tuple[str, ...]) -> None:
    decode_request(req, names)


@pytest.mark.slow
@long_only
@settings(FUZZ, max_examples=max(LONG, 1))
@given(raw_bytes_buffer(), st.none() | st.integers(0, 6))
def test_fuzz_bytes_prefixes_long(buf: bytes, expected: int | None) -> None:
    decode_buffer(buf, expected)
