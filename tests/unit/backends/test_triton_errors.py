"""An upstream error names the RPC the firewall sent and, when it differs, the client's."""

from __future__ import annotations

import grpc
import pytest

from infershield.backends.triton import map_rpc_error
from infershield.errors import BackendUnavailable, DeadlineExceeded, UpstreamError
from infershield.telemetry.instrument import rpc_scope


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(("client", "method", "want"), [
    ("/inference.GRPCInferenceService/ModelInfer", "ModelInfer",
     "upstream Triton is unavailable (ModelInfer)"),
    ("/infershield.v1.Firewall/Infer", "ModelInfer",
     "upstream Triton is unavailable (ModelInfer, for the client's Infer)"),
    ("/inference.GRPCInferenceService/ModelInfer", "ModelConfig",
     "upstream Triton is unavailable (ModelConfig, for the client's ModelInfer)"),
])
def test_unavailable_names_both_rpcs_when_they_differ(client: str, method: str,
                                                      want: str) -> None:
    with rpc_scope(client, None):
        err = map_rpc_error(_error(grpc.StatusCode.UNAVAILABLE, "connect failed"), method)
    assert isinstance(err, BackendUnavailable)
    assert err.message == want


def test_deadline_names_the_client_rpc() -> None:
    with rpc_scope("/infershield.v1.Firewall/Infer", None):
        err = map_rpc_error(_error(grpc.StatusCode.DEADLINE_EXCEEDED, ""), "ModelInfer")
    assert isinstance(err, DeadlineExceeded)
    assert err.message == ("deadline exceeded waiting for upstream ModelInfer, "
                           "for the client's Infer")


def test_a_drop_in_client_gets_tritons_message_unchanged() -> None:
    with rpc_scope("/inference.GRPCInferenceService/ModelInfer", None):
        err = map_rpc_error(_error(grpc.StatusCode.NOT_FOUND, "unknown model 'x'"), "ModelInfer")
    assert isinstance(err, UpstreamError)
    assert err.message == "unknown model 'x'" and err.grpc_code is grpc.StatusCode.NOT_FOUND
    with rpc_scope("/infershield.v1.Firewall/Infer", None):
        err = map_rpc_error(_error(grpc.StatusCode.NOT_FOUND, "unknown model 'x'"), "ModelInfer")
    assert err.message == "unknown model 'x' (upstream ModelInfer, for the client's Infer)"
