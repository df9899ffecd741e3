"""The backend interface: the Triton gRPC inference service, minus the transport.

Both backends speak Triton's protobuf messages (``tritonclient.grpc.service_pb2``), which
are the data model of the drop-in API: the firewall screens them and hands them on, so a
benign response reaches the caller byte for byte as the backend produced it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infershield.call import CallContext

if TYPE_CHECKING:
    from tritonclient.grpc import service_pb2 as pb

    from infershield.config import Config

#: Triton's unary RPCs, by method name.
UNARY_METHODS: tuple[str, ...] = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelConfig",
    "ModelInfer",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
)

#: Calls that only read state: safe to retry on a transient upstream failure.
IDEMPOTENT_METHODS: frozenset[str] = frozenset(
    {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "SystemSharedMemoryStatus",
        "CudaSharedMemoryStatus",
    }
)


class Backend(abc.ABC):
    """Runs Triton RPCs. Implementations raise FirewallError subclasses only."""

    #: ``triton`` or ``local``.
    kind: str = ""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect / load models; called once inside the server's event loop."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and workers."""

    async def reload_credentials(self) -> None:  # noqa: B027 - optional hook
        """Re-read certificates the backend connects with (SIGHUP); keep the old ones when
        the new ones do not load."""

    @abc.abstractmethod
    async def call(self, method: str, request: Any, ctx: CallContext) -> Any:
        """Run the unary RPC ``method`` (one of :data:`UNARY_METHODS`)."""

    async def call_wire(
        self, method: str, request: Any, wire: bytes | None, ctx: CallContext
    ) -> tuple[Any, bytes | None]:
        """:meth:`call`, given also the request's bytes as the caller sent them (``wire``,
        None when screening rewrote the request). Returns the response and, where the backend
        has them, its bytes as received, which the firewall passes on when output screening
        changed nothing. This default calls :meth:`call` and has no bytes."""
        return await self.call(method, request, ctx), None

    @abc.abstractmethod
    def stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], ctx: CallContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """The bidirectional ModelStreamInfer: responses in the order the backend sends them."""

    @abc.abstractmethod
    async def ready(self) -> bool:
        """Whether the backend can serve (for the health service)."""

    def tokenizer_files(self) -> dict[str, Path]:
        """Model name -> its ``tokenizer.json``, for token limits counted in its own tokens."""
        return {}


def build_backend(config: Config) -> Backend:
    """The backend ``config.backend`` names."""
    if config.backend.kind == "triton":
        from infershield.backends.triton import TritonBackend

        return TritonBackend.from_config(config)
    from infershield.backends.local import LocalBackend

    return LocalBackend.from_config(config)
