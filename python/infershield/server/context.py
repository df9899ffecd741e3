"""From a gRPC servicer context to the transport-free :class:`CallContext`."""

from __future__ import annotations

from typing import Any

import grpc

from infershield.auth.access import Identity, current_identity
from infershield.call import CallContext
from infershield.config import LimitsConfig
from infershield.limits.deadline import Deadline

#: Transport-level headers that must not be forwarded upstream.
_HOP_HEADERS = frozenset({"user-agent", "content-type", "te", "host", "content-length"})
#: The firewall's own credentials: consumed here, never sent upstream or shown to checks.
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
#: Streams are long-lived: without a client deadline they get this much.
STREAM_DEFAULT_S = 24 * 3600.0


def forwardable(metadata: Any, *, credentials: bool = False) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's metadata minus transport headers (``grpc-*``, pseudo-headers, hop) and,
    with ``credentials``, minus the API key headers the firewall consumed."""
    out: list[tuple[str, str | bytes]] = []
    for key, value in metadata or ():
        k = key.lower()
        if k.startswith(("grpc-", ":")) or k in _HOP_HEADERS:
            continue
        if credentials and k in _CREDENTIAL_HEADERS:
            continue
        out.append((k, value))
    return tuple(out)


def call_context(context: grpc.aio.ServicerContext[Any, Any], limits: LimitsConfig) -> CallContext:
    """A unary call: deadline = min(client deadline, ``limits.deadline_s``)."""
    identity = current_identity()
    return CallContext(
        Deadline.effective(limits.deadline_s, context.time_remaining()),
        forwardable(context.invocation_metadata(), credentials=_keyed(identity)),
        identity.address if identity is not None and identity.address else context.peer(),
        identity=identity,
    )


def stream_context(context: grpc.aio.ServicerContext[Any, Any]) -> CallContext:
    """A stream: bounded by the client's deadline only (it may carry many requests)."""
    remaining = context.time_remaining()
    identity = current_identity()
    return CallContext(
        Deadline.after(STREAM_DEFAULT_S if remaining is None else remaining),
        forwardable(context.invocation_metadata(), credentials=_keyed(identity)),
        identity.address if identity is not None and identity.address else context.peer(),
        {"stream_timeout": remaining},
        identity=identity,
    )


def _keyed(identity: Identity | None) -> bool:
    """Whether the caller authenticated with an API key (whose headers are then dropped)."""
    return identity is not None and identity.source == "key"
