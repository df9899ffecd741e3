"""The cheapest possible Python gRPC hop: a ``grpc.aio`` proxy that screens nothing.

One generic handler forwards every unary call's raw bytes on one pooled upstream channel
and passes the response bytes back (no protobuf parsing, no interceptors, no telemetry).
``bench_e2e`` measures it next to the firewall as the floor of what a Python ``grpc.aio``
second hop costs in CPU per request on the same machine.

Run: ``python -m bench.raw_proxy LISTEN UPSTREAM`` (both ``host:port``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = self.handlers.get(method)
        if handler is None:
            upstream = self.channel.unary_unary(method)  # bytes in, bytes out

            async def forward(request: bytes, context: Any) -> Any:
                return await upstream(request, timeout=context.time_remaining())

            handler = self.handlers[method] = grpc.unary_unary_rpc_method_handler(forward)
        return handler


async def serve(listen: str, upstream: str) -> None:
    """Serve until cancelled."""
    async with grpc.aio.insecure_channel(upstream) as channel:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_Forward(channel),))
        server.add_insecure_port(listen)
        await server.start()
        await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.raw_proxy LISTEN UPSTREAM", file=sys.stderr)
        return 2
    asyncio.run(serve(args[0], args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
