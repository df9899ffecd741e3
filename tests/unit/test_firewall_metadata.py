"""ServerMetadata does not advertise protocol extensions the firewall refuses."""

from __future__ import annotations

import asyncio
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from infershield.backends.base import Backend, CallContext
from infershield.config import Config, PolicyConfig
from infershield.firewall import ADMIN_EXTENSIONS, Firewall
from infershield.policy import Policy

TRITON_EXTENSIONS = [
    "classification", "sequence", "model_repository", "model_repository(unload_dependents)",
    "schedule_policy", "model_configuration", "system_shared_memory", "cuda_shared_memory",
    "binary_tensor_data", "parameters", "statistics", "trace", "logging",
]


class MetadataBackend(Backend):
    kind = "triton"

    async def call(self, method: str, request: Any, ctx: CallContext) -> Any:
        assert method == "ServerMetadata"
        return pb.ServerMetadataResponse(name="triton", version="2.41.0",
                                         extensions=TRITON_EXTENSIONS)

    def stream_infer(self, requests: Any, ctx: CallContext) -> Any:
        raise AssertionError("not used")

    async def ready(self) -> bool:
        return True


def _extensions(allow_admin: bool) -> list[str]:
    cfg = Config(policy=PolicyConfig(allow_admin_rpcs=allow_admin))
    firewall = Firewall(Policy.from_config(cfg), MetadataBackend())
    resp = asyncio.run(firewall.call("ServerMetadata", pb.ServerMetadataRequest(),
                                     CallContext.after(5.0)))
    assert resp.name == "triton" and resp.version == "2.41.0"
    return list(resp.extensions)


def test_admin_extensions_are_hidden_while_admin_rpcs_are_refused() -> None:
    got = _extensions(allow_admin=False)
    assert got == [e for e in TRITON_EXTENSIONS if e not in ADMIN_EXTENSIONS]
    assert {"classification", "binary_tensor_data", "statistics", "parameters"} <= set(got)
    assert not set(got) & {"model_repository", "system_shared_memory", "trace", "logging"}


def test_all_extensions_pass_when_the_policy_allows_admin_rpcs() -> None:
    assert _extensions(allow_admin=True) == TRITON_EXTENSIONS
