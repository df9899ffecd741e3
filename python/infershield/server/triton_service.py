"""``inference.GRPCInferenceService``: Triton's API, screened. Converts and delegates only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from infershield.backends.base import UNARY_METHODS
from infershield.firewall import Firewall, StreamError
from infershield.server.context import call_context, stream_context


class TritonService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Every unary RPC goes to :meth:`Firewall.call`; ModelStreamInfer to
    :meth:`Firewall.stream_infer`. The methods are generated from :data:`UNARY_METHODS`."""

    def __init__(self, firewall: Firewall) -> None:
        self.firewall = firewall

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ModelStreamInferResponse | StreamError]:
        # A StreamError is yielded as it is: the admission layer logs and counts an in-stream
        # block like any other, and the error interceptor turns it into the in-band response.
        async for item in self.firewall.stream_infer(request_iterator, stream_context(context)):
            yield item


def _unary(method: str) -> Any:
    async def handler(
        self: TritonService, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        ctx = call_context(context, self.firewall.policy.config.limits)
        return await self.firewall.call(method, request, ctx)

    handler.__name__ = handler.__qualname__ = method
    handler.__doc__ = f"Triton {method}, through the firewall."
    return handler


for _method in UNARY_METHODS:
    setattr(TritonService, _method, _unary(_method))


def add_to_server(firewall: Firewall, server: grpc.aio.Server) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(TritonService(firewall), server)  # type: ignore[no-untyped-call]
