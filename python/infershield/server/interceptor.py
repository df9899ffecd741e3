"""The one place domain errors become gRPC statuses.

Every :class:`~infershield.errors.FirewallError` carries its ``grpc_code``; its ``message``
becomes the status details and its ``trailing_metadata()`` (which check blocked, which limit
was hit) the trailers. Anything else is a bug: it is logged with its traceback and the caller
gets INTERNAL with a fixed message, so no internals leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb

from infershield.errors import FirewallError
from infershield.firewall import FINAL_RESPONSE, StreamError
from infershield.server.wrapping import WrappingInterceptor
from infershield.telemetry.instrument import rpc_scope, set_rpc_status

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error in the firewall"
#: Services whose RPCs get a server span and request metrics. Every other service (health,
#: reflection) only has its errors mapped: the access layer can refuse those calls too.
WRAPPED_SERVICES = ("/inference.GRPCInferenceService/", "/infershield.v1.Firewall/")


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """(code, details, trailing metadata) for an exception raised by a handler."""
    if isinstance(exc, FirewallError):
        return exc.grpc_code, exc.message, exc.trailing_metadata()
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, ()


def stream_error_response(err: StreamError) -> pb.ModelStreamInferResponse:
    """A failed request inside ModelStreamInfer, told in-band: ``error_message`` is
    ``CODE: details`` and the response is marked final, so the client stops waiting for it."""
    code, details, _ = status_of(err.error)
    resp = pb.ModelStreamInferResponse(
        error_message=f"{code.name}: {details}",
        infer_response=pb.ModelInferResponse(
            id=err.request_id, model_name=err.model, model_version=err.version
        ),
    )
    resp.infer_response.parameters[FINAL_RESPONSE].bool_param = True
    return resp


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, span: Any, method: str
) -> None:
    code, details, trailers = status_of(exc)
    if not isinstance(exc, FirewallError):
        log.error("unhandled error in %s", method, exc_info=exc)
    set_rpc_status(span, code, details, error=exc)
    await context.abort(code, details, trailing_metadata=trailers)


class ErrorInterceptor(WrappingInterceptor):
    """Maps exceptions to statuses and opens the RPC's server span."""

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        scoped = method.startswith(WRAPPED_SERVICES)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, scoped),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            stream = handler.stream_stream
            wrap = _wrap_stream if inspect.isasyncgenfunction(stream) else _wrap_unary
            return grpc.stream_stream_rpc_method_handler(
                wrap(stream, method, scoped),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            # Health's Watch writes with context.write() instead of yielding.
            stream = handler.unary_stream
            wrap = _wrap_stream if inspect.isasyncgenfunction(stream) else _wrap_unary
            return grpc.unary_stream_rpc_method_handler(
                wrap(stream, method, scoped),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _scope(scoped: bool, method: str, metadata: Any, request: Any = None) -> Any:
    return rpc_scope(method, metadata, request) if scoped else contextlib.nullcontext(None)


def _wrap_unary(behavior: Any, method: str, scoped: bool) -> Any:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with _scope(scoped, method, context.invocation_metadata(), request) as span:
            try:
                response = await behavior(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort(context, exc, span, method)
            set_rpc_status(span, grpc.StatusCode.OK)
            return response

    return wrapped


def _wrap_stream(behavior: Any, method: str, scoped: bool) -> Any:
    async def wrapped(
        request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        with _scope(scoped, method, context.invocation_metadata()) as span:
            try:
                async for response in behavior(request_iterator, context):
                    # One request of a stream failed: told in-band, the stream goes on.
                    yield (
                        stream_error_response(response)
                        if isinstance(response, StreamError)
                        else response
                    )
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort(context, exc, span, method)
            set_rpc_status(span, grpc.StatusCode.OK)

    return wrapped
