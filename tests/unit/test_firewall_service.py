"""The own API's servicer (``infershield.v1.Firewall``) in a real server, on the wire."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from firewall_support import assert_refused_unparseable, firewall_in_front


class _Upstream(grpc.GenericRpcHandler):
    """A Triton stand-in that is ready and records every other method it is asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        name = details.method.rpartition("/")[2]
        if name in ("ServerReady", "ServerLive"):
            data = pb.ServerReadyResponse(ready=True).SerializeToString()
            return grpc.unary_unary_rpc_method_handler(lambda req, ctx: data)
        with self.lock:
            self.asked.append(name)
        return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Upstream, grpc.Channel]]:
    upstream = _Upstream()
    with firewall_in_front(upstream, tmp_path_factory.mktemp("own") / "config.yaml") as channel:
        yield upstream, channel


@pytest.mark.parametrize("method", ["Infer", "Scan"])
def test_an_unparseable_request_is_invalid_argument_without_internals(
    served: tuple[_Upstream, grpc.Channel], method: str
) -> None:
    """Raw bytes that do not parse (a length-delimited field cut short): INVALID_ARGUMENT in
    the firewall's own words, not UNKNOWN with the parser's exception, and nothing upstream."""
    upstream, channel = served
    upstream.asked.clear()
    assert_refused_unparseable(channel, "infershield.v1.Firewall", method)
    assert not upstream.asked
