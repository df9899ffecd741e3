"""The access layer: perimeter and authentication before anything else runs.

Sits inside :class:`~infershield.server.interceptor.ErrorInterceptor` (its rejections
become statuses there) and outside admission control, so a caller that is not allowed or
not known costs no rate-limit token, no concurrency slot and no upstream call. It turns the
transport's facts (peer, metadata, the client certificate) into an
:class:`~infershield.auth.access.Identity` for the call; the firewall core authorizes
methods and models against it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import grpc

from infershield.auth.access import AccessControl, Identity, reset_identity, set_identity
from infershield.auth.tls import peer_subject
from infershield.errors import AccessDenied, Unauthenticated
from infershield.server.wrapping import WrappingInterceptor
from infershield.telemetry import metrics as _metrics
from infershield.telemetry.instrument import record_identity


class AccessInterceptor(WrappingInterceptor):
    """Perimeter + authentication for every RPC; see the module docstring."""

    def __init__(self, access: AccessControl, *, mtls: bool = False) -> None:
        super().__init__()
        self.access = access
        self.mtls = mtls

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
        )
        for attr, make, streaming in kinds:
            behavior = getattr(handler, attr)
            if behavior is not None:
                # Streaming handlers either yield responses or write them with
                # context.write() and return: wrap each in its own style.
                async_gen = streaming and inspect.isasyncgenfunction(behavior)
                wrap = self._wrap_stream if async_gen else self._wrap_unary
                return make(
                    wrap(behavior, method),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _identify(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> Identity:
        subject = peer_subject(context.auth_context()) if self.mtls else ""
        try:
            identity = self.access.authenticate(
                method, context.peer(), context.invocation_metadata() or (), subject
            )
        except (Unauthenticated, AccessDenied) as exc:
            m = _metrics.active()
            if m is not None:
                reason = exc.what if isinstance(exc, AccessDenied) else "credentials"
                m.auth_rejections.labels(reason).inc()
            raise
        record_identity(identity)
        return identity

    def _wrap_unary(self, behavior: Any, method: str) -> Any:
        """Wraps a handler that returns (a unary response, or None after context.write)."""

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = set_identity(self._identify(context, method))
            try:
                return await behavior(request, context)
            finally:
                reset_identity(token)

        return wrapped

    def _wrap_stream(self, behavior: Any, method: str) -> Any:
        async def wrapped(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            token = set_identity(self._identify(context, method))
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                reset_identity(token)

        return wrapped
