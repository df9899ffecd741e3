"""Upstream statuses as the firewall's own errors (backends/triton.py)."""

from __future__ import annotations

import grpc
import pytest

from infershield.backends.triton import map_rpc_error
from infershield.errors import BackendUnavailable, DeadlineExceeded, UpstreamError


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "expected", "caller_sees"),
    [
        (grpc.StatusCode.UNAVAILABLE, BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
        # A call the upstream dropped is retryable, never a CANCELLED the caller never asked for.
        (grpc.StatusCode.CANCELLED, BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
        (grpc.StatusCode.INVALID_ARGUMENT, UpstreamError, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_upstream_status_mapping(
    code: grpc.StatusCode, expected: type[Exception], caller_sees: grpc.StatusCode
) -> None:
    err = map_rpc_error(_error(code, "upstream said no"), "ModelInfer")
    assert type(err) is expected
    assert err.grpc_code is caller_sees
    assert "ModelInfer" in err.message or err.message == "upstream said no"
