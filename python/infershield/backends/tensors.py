"""Triton tensor codec: validate request tensors, decode and re-encode BYTES (text) tensors.

Triton carries a tensor either in typed ``contents`` (``bytes_contents`` for BYTES) or in
``raw_input_contents`` / ``raw_output_contents``, one buffer per tensor in the order of
``inputs``/``outputs``. In raw form a BYTES tensor is a run of elements, each a 4-byte
little-endian length followed by that many bytes. Everything here is pure and transport-free;
every malformed tensor is an :class:`~infershield.errors.InvalidRequest` naming the tensor.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from infershield.errors import InvalidRequest

#: Fixed element sizes; BYTES is variable-length.
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "BF16": 2,
    "FP32": 4,
    "FP64": 8,
}
DATATYPES = frozenset(DTYPE_SIZES) | {"BYTES"}

#: Which typed ``InferTensorContents`` field holds each datatype (FP16/BF16: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

NUMPY_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_PREFIX = struct.Struct("<I")
#: Largest product of non-zero dimensions a shape may have (far past any 2 GiB message).
MAX_SHAPE_EXTENT = 2**40


def element_count(shape: Sequence[int], where: str) -> int:
    """Number of elements of ``shape``; negative dimensions are invalid in a request."""
    n = 1
    extent = 1  # product of the non-zero dimensions: what numpy must be able to address
    for d in shape:
        if d < 0:
            raise InvalidRequest(f"{where}: shape {list(shape)} has a negative dimension")
        n *= d
        extent *= max(d, 1)
    if extent > MAX_SHAPE_EXTENT:
        # An empty tensor may declare any other dimension; numpy cannot reshape to a huge one.
        raise InvalidRequest(f"{where}: shape {list(shape)} is too large")
    return n


def decode_bytes(buf: bytes, where: str, expected: int | None = None) -> list[bytes]:
    """Split a raw BYTES buffer into its elements (4-byte little-endian length prefixes)."""
    out: list[bytes] = []
    pos, end = 0, len(buf)
    view = memoryview(buf)
    while pos < end:
        if end - pos < 4:
            raise InvalidRequest(
                f"{where}: truncated BYTES length prefix at offset {pos} "
                f"({end - pos} bytes left, 4 needed)"
            )
        (n,) = _PREFIX.unpack_from(buf, pos)
        pos += 4
        if n > end - pos:
            raise InvalidRequest(
                f"{where}: BYTES element {len(out)} declares {n} bytes but only {end - pos} remain"
            )
        out.append(bytes(view[pos : pos + n]))
        pos += n
        if expected is not None and len(out) > expected:
            raise InvalidRequest(
                f"{where}: raw BYTES data holds more than the {expected} elements its shape "
                "declares"
            )
    if expected is not None and len(out) != expected:
        raise InvalidRequest(
            f"{where}: shape declares {expected} elements but raw BYTES data holds {len(out)}"
        )
    return out


def encode_bytes(elements: Sequence[bytes]) -> bytes:
    """The raw BYTES layout of ``elements``."""
    parts: list[bytes] = []
    for e in elements:
        parts.append(_PREFIX.pack(len(e)))
        parts.append(e)
    return b"".join(parts)


def decode_text(elements: Sequence[bytes], where: str) -> list[str]:
    """UTF-8 decode each element; invalid UTF-8 cannot be screened, so it is refused."""
    texts: list[str] = []
    for i, e in enumerate(elements):
        try:
            texts.append(e.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"{where}: element {i} is not valid UTF-8 (byte {exc.start}); text tensors "
                "must be UTF-8"
            ) from None
    return texts


@dataclass(slots=True)
class TextTensor:
    """One BYTES tensor chosen for screening, with its decoded elements."""

    name: str
    #: Position in ``inputs``/``outputs`` (and in the raw contents list when raw).
    index: int
    raw: bool
    texts: list[str]


def _typed_count(t: Any, where: str) -> int:
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:  # FP16/BF16 have no typed field
        return 0
    return len(getattr(t.contents, field))


def _other_typed_fields(t: Any) -> list[str]:
    field = CONTENTS_FIELD.get(t.datatype)
    return [f.name for f, _ in t.contents.ListFields() if f.name != field]


def validate_request_tensors(req: pb.ModelInferRequest) -> None:
    """Every input: known datatype, non-negative shape, data that matches the shape."""
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} buffers for {len(req.inputs)} inputs"
        )
    seen: set[str] = set()
    for i, t in enumerate(req.inputs):
        where = f"input {t.name!r}"
        if not t.name:
            raise InvalidRequest(f"input {i} has no name")
        if t.name in seen:
            raise InvalidRequest(f"{where} appears more than once")
        seen.add(t.name)
        if t.datatype not in DATATYPES:
            raise InvalidRequest(
                f"{where}: unknown datatype {t.datatype!r} (expected one of "
                f"{', '.join(sorted(DATATYPES))})"
            )
        n = element_count(t.shape, where)
        shm = "shared_memory_region" in t.parameters
        if shm:
            continue  # no data in the message; the caller decides whether that is allowed
        if raw:
            if t.HasField("contents") and t.contents.ListFields():
                raise InvalidRequest(f"{where}: has both typed contents and raw_input_contents")
            if t.datatype == "BYTES":
                decode_bytes(raw[i], where, expected=n)
            elif len(raw[i]) != n * DTYPE_SIZES[t.datatype]:
                raise InvalidRequest(
                    f"{where}: shape {list(t.shape)} of {t.datatype} needs "
                    f"{n * DTYPE_SIZES[t.datatype]} bytes, raw data has {len(raw[i])}"
                )
        else:
            if _other_typed_fields(t):
                raise InvalidRequest(
                    f"{where}: contents field {_other_typed_fields(t)[0]} does not match "
                    f"datatype {t.datatype}"
                )
            got = _typed_count(t, where)
            if got != n:
                raise InvalidRequest(
                    f"{where}: shape {list(t.shape)} declares {n} elements but contents hold {got}"
                )


def uses_shared_memory(req: pb.ModelInferRequest) -> bool:
    """Whether any input or requested output lives in a shared-memory region."""
    return any("shared_memory_region" in t.parameters for t in req.inputs) or any(
        "shared_memory_region" in o.parameters for o in req.outputs
    )


def _selected(name: str, datatype: str, names: Sequence[str], where: str) -> bool:
    if not names:
        return datatype == "BYTES"
    if name not in names:
        return False
    if datatype != "BYTES":
        raise InvalidRequest(f"{where} {name!r} is a text tensor but has datatype {datatype}")
    return True


def input_texts(req: pb.ModelInferRequest, names: Sequence[str]) -> list[TextTensor]:
    """The text inputs of a validated request: ``names``, or every BYTES tensor if empty."""
    out: list[TextTensor] = []
    raw = bool(req.raw_input_contents)
    for i, t in enumerate(req.inputs):
        if "shared_memory_region" in t.parameters:
            continue  # only reachable when the policy allows shared memory
        if not _selected(t.name, t.datatype, names, "input"):
            continue
        where = f"input {t.name!r}"
        n = element_count(t.shape, where)
        elems = (
            decode_bytes(req.raw_input_contents[i], where, expected=n)
            if raw
            else list(t.contents.bytes_contents)
        )
        out.append(TextTensor(t.name, i, raw, decode_text(elems, where)))
    return out


def output_texts(resp: pb.ModelInferResponse, names: Sequence[str]) -> list[TextTensor]:
    """The text outputs of a response (raw or typed), decoded for screening."""
    out: list[TextTensor] = []
    raw = bool(resp.raw_output_contents)
    for i, t in enumerate(resp.outputs):
        if "shared_memory_region" in t.parameters:
            continue  # only reachable when the policy allows shared memory
        if not _selected(t.name, t.datatype, names, "output"):
            continue
        where = f"output {t.name!r}"
        if raw:
            if i >= len(resp.raw_output_contents):
                raise InvalidRequest(f"{where}: the response has no raw data for it")
            elems = decode_bytes(resp.raw_output_contents[i], where)
        else:
            elems = list(t.contents.bytes_contents)
        out.append(TextTensor(t.name, i, raw, decode_text(elems, where)))
    return out


def _rewrite(raw: Any, tensors: Any, tensor: TextTensor, texts: Sequence[str]) -> None:
    """Replace a text tensor's elements (after a REDACT), in the form it came in."""
    data = [s.encode("utf-8") for s in texts]
    if tensor.raw:
        raw[tensor.index] = encode_bytes(data)
    else:
        field = tensors[tensor.index].contents.bytes_contents
        del field[:]
        field.extend(data)


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One output tensor as the own API returns it: the raw buffer when the backend sent
    raw contents (``None`` otherwise) and, for a BYTES tensor, its elements as text."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None
    text: tuple[str, ...]


def response_outputs(resp: pb.ModelInferResponse) -> list[OutputTensor]:
    """Every output tensor of ``resp``, BYTES elements decoded (invalid UTF-8 replaced, since
    the text is for display; ``raw`` keeps the exact bytes)."""
    out: list[OutputTensor] = []
    for i, t in enumerate(resp.outputs):
        raw: bytes | None = None
        elems: Sequence[bytes] = ()
        if i < len(resp.raw_output_contents):
            raw = resp.raw_output_contents[i]
            if t.datatype == "BYTES":
                elems = decode_bytes(raw, f"output {t.name!r}")
        elif t.datatype == "BYTES":
            elems = t.contents.bytes_contents
        text = tuple(e.decode("utf-8", "replace") for e in elems)
        out.append(OutputTensor(t.name, t.datatype, tuple(t.shape), raw, text))
    return out


def rewrite_input(req: pb.ModelInferRequest, tensor: TextTensor, texts: Sequence[str]) -> None:
    """Replace a text input's elements (after a REDACT), in the form it came in."""
    _rewrite(req.raw_input_contents, req.inputs, tensor, texts)


def rewrite_output(resp: pb.ModelInferResponse, tensor: TextTensor, texts: Sequence[str]) -> None:
    """Replace a text output's elements (after a REDACT), in the form it came in."""
    _rewrite(resp.raw_output_contents, resp.outputs, tensor, texts)


# --------------------------------------------------------------------------- numpy


def input_array(req: pb.ModelInferRequest, index: int) -> np.ndarray:  # type: ignore[type-arg]
    """A validated input as a numpy array (BYTES -> object array of ``bytes``)."""
    t = req.inputs[index]
    shape = tuple(t.shape)
    where = f"input {t.name!r}"
    if t.datatype == "BYTES":
        elems = (
            decode_bytes(req.raw_input_contents[index], where)
            if req.raw_input_contents
            else list(t.contents.bytes_contents)
        )
        return np.array(elems, dtype=object).reshape(shape)
    if t.datatype == "BF16":
        raise InvalidRequest(f"{where}: BF16 is not supported by the local backend")
    dtype = NUMPY_DTYPES[t.datatype]
    if req.raw_input_contents:
        return np.frombuffer(
            req.raw_input_contents[index], dtype=np.dtype(dtype).newbyteorder("<")
        ).reshape(shape)
    field = CONTENTS_FIELD.get(t.datatype)
    if field is None:
        # FP16 has no typed contents field; validation lets only an empty tensor through.
        return np.zeros(shape, dtype=dtype)
    values = list(getattr(t.contents, field))
    if np.dtype(dtype).kind in "iu" and values:
        # INT8/INT16/UINT8/UINT16 travel in 32-bit fields: refuse what does not fit.
        info = np.iinfo(dtype)
        if min(values) < info.min or max(values) > info.max:
            raise InvalidRequest(f"{where}: a value is out of range for {t.datatype}")
    return np.asarray(values, dtype=dtype).reshape(shape)


def numpy_datatype(arr: np.ndarray) -> str:  # type: ignore[type-arg]
    """Triton datatype name of a numpy array."""
    if arr.dtype == np.object_ or arr.dtype.kind in ("S", "U"):
        return "BYTES"
    for name, dt in NUMPY_DTYPES.items():
        if arr.dtype == np.dtype(dt):
            return name
    raise InvalidRequest(f"the model produced an unsupported dtype {arr.dtype}")


def raw_array(arr: np.ndarray) -> bytes:  # type: ignore[type-arg]
    """Triton raw bytes of a numpy array."""
    if numpy_datatype(arr) == "BYTES":
        return encode_bytes(
            [e if isinstance(e, bytes) else str(e).encode("utf-8") for e in arr.reshape(-1)]
        )
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
