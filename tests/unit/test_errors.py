"""What an upstream status means to the core (the core never reads gRPC codes itself)."""

from __future__ import annotations

import grpc
import pytest

from infershield.errors import UpstreamError
from infershield.limits.breaker import is_upstream_failure

C = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "unknown_model", "unhealthy"),
    [
        (C.NOT_FOUND, True, False),
        (C.INVALID_ARGUMENT, True, False),
        (C.UNAVAILABLE, False, True),
        (C.INTERNAL, False, True),
        (C.RESOURCE_EXHAUSTED, False, False),
        (C.PERMISSION_DENIED, False, False),
    ],
)
def test_upstream_error_meaning(
    code: grpc.StatusCode, unknown_model: bool, unhealthy: bool
) -> None:
    exc = UpstreamError("upstream said no", code)
    assert exc.grpc_code is code  # passed through to the caller unchanged
    assert (exc.unknown_model, exc.unhealthy) == (unknown_model, unhealthy)
    assert is_upstream_failure(exc) is unhealthy
