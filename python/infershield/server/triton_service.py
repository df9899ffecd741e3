"""``inference.GRPCInferenceService``: Triton's API, screened. Converts and delegates only.

ModelInfer is forwarded lean: its handler takes the request's bytes as they came and parses
them once (:class:`WireRequest`); the firewall sends those same bytes upstream unless
screening rewrote the request, and answers with the backend's response bytes unless output
screening rewrote the response (:meth:`Firewall.call`'s ``wire``). Every other RPC uses the
generated (de)serialisers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from infershield.backends.base import UNARY_METHODS
from infershield.firewall import Firewall, StreamError
from infershield.server.context import call_context, stream_context
from infershield.server.wire import Unreadable, reader, unary_handler

SERVICE_NAME = "inference.GRPCInferenceService"


class WireRequest:
    """A ModelInfer request parsed once, with the bytes it was parsed from.

    ``model_name`` and ``id`` are copied out for the interceptors (telemetry, abuse control),
    which read them as they would from the message."""

    __slots__ = ("data", "id", "model_name", "msg")

    def __init__(self, data: bytes) -> None:
        self.data = data
        msg = _read_infer_request(data)
        self.msg = msg
        self.model_name = "" if isinstance(msg, Unreadable) else msg.model_name
        self.id = "" if isinstance(msg, Unreadable) else msg.id


_read_infer_request = reader(pb.ModelInferRequest)


def _serialize_response(response: Any) -> bytes:
    """The backend's bytes as they are, or a (rewritten) message serialised."""
    return response if type(response) is bytes else response.SerializeToString()


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

    async def ModelInferWire(
        self, request: WireRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        """ModelInfer from the request's bytes; returns the response's bytes when unchanged."""
        if isinstance(request.msg, Unreadable):
            raise request.msg.refuse()
        firewall = self.firewall
        ctx = call_context(context, firewall.policy.config.limits)
        return await firewall.call("ModelInfer", request.msg, ctx, wire=request.data)


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


def method_handlers(service: TritonService) -> dict[str, grpc.RpcMethodHandler]:
    """The service's handlers by method name: ModelInfer on raw bytes, the rest typed."""
    handlers: dict[str, grpc.RpcMethodHandler] = {
        m: unary_handler(
            getattr(service, m), getattr(pb, f"{m}Request"), getattr(pb, f"{m}Response")
        )
        for m in UNARY_METHODS
    }
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        service.ModelInferWire,
        request_deserializer=WireRequest,
        response_serializer=_serialize_response,
    )
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        service.ModelStreamInfer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelStreamInferResponse.SerializeToString,
    )
    return handlers


def add_to_server(firewall: Firewall, server: grpc.aio.Server) -> None:
    handlers = method_handlers(TritonService(firewall))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
    )
