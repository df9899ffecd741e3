"""Request deserializers that never raise, for every service the server hosts.

A deserializer that raises makes grpc answer UNKNOWN with the exception's class and text
(``Unexpected <class 'google.protobuf.message.DecodeError'>: ...``): an internal leaked, and
the wrong code for the caller's mistake. These hand the handler an :class:`Unreadable`
marker instead, which it refuses with INVALID_ARGUMENT before anything else happens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from infershield.errors import InvalidRequest


class Unreadable:
    """A request whose bytes do not parse as ``message`` (the message type's name)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def refuse(self) -> InvalidRequest:
        return InvalidRequest(f"the request is not a readable {self.message}")


def reader(message: Any) -> Callable[[bytes], Any]:
    """A deserializer for the protobuf ``message`` type that returns :class:`Unreadable`
    instead of raising."""
    name = message.DESCRIPTOR.name

    def read(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError:
            return Unreadable(name)

    return read


def unary_handler(
    behavior: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
    request: Any,
    response: Any,
) -> grpc.RpcMethodHandler:
    """A unary handler for ``behavior`` on ``request``/``response`` messages: an unreadable
    request is refused (INVALID_ARGUMENT) and never reaches ``behavior``."""

    async def handle(req: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(req, Unreadable):
            raise req.refuse()
        return await behavior(req, context)

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=reader(request),
        response_serializer=response.SerializeToString,
    )
