"""The per-request call context: what a request carries from the transport into the core.

Servicers build it (``infershield.server.context``); the firewall and the backends read it.
It lives at the top of the package so neither layer reaches into the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infershield.limits.deadline import Deadline

if TYPE_CHECKING:
    from infershield.auth.access import Identity

#: Caller metadata as gRPC carries it: (key, value) pairs, binary values as bytes.
Metadata = tuple[tuple[str, "str | bytes"], ...]


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a request carries from the transport: caller metadata and its deadline."""

    deadline: Deadline
    #: Caller metadata to forward (already stripped of transport-level headers).
    metadata: Metadata = ()
    peer: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Who is calling (set by the server's access layer); None in-process, unrestricted.
    identity: Identity | None = None

    @property
    def caller(self) -> str:
        """The caller's name for audit records: its tenant, else its address."""
        return self.identity.caller if self.identity is not None else self.peer

    @classmethod
    def after(cls, seconds: float, metadata: Metadata = ()) -> CallContext:
        return cls(Deadline.after(seconds), metadata)

    def timeout(self) -> float:
        """Seconds left for a downstream call (never negative)."""
        return self.deadline.remaining()
