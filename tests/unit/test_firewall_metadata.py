"""ServerMetadata does not advertise protocol extensions the firewall refuses the caller."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from infershield.auth.access import Identity
from infershield.backends.base import Backend
from infershield.call import CallContext
from infershield.config import Config
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


def _extensions(roles: frozenset[str] | None) -> list[str]:
    firewall = Firewall(Policy.from_config(Config()), MetadataBackend())
    identity = None if roles is None else Identity("t", roles, None, "key", "k1")
    ctx = dataclasses.replace(CallContext.after(5.0), identity=identity)
    resp = asyncio.run(firewall.call("ServerMetadata", pb.ServerMetadataRequest(), ctx))
    assert resp.name == "triton" and resp.version == "2.41.0"
    return list(resp.extensions)


def test_admin_extensions_are_hidden_from_callers_without_the_admin_role() -> None:
    got = _extensions(frozenset({"infer", "scan"}))
    assert got == [e for e in TRITON_EXTENSIONS if e not in ADMIN_EXTENSIONS]
    assert {"classification", "binary_tensor_data", "statistics", "parameters"} <= set(got)
    assert not set(got) & {"model_repository", "system_shared_memory", "trace", "logging"}


def test_all_extensions_pass_for_the_admin_role() -> None:
    assert _extensions(frozenset({"admin"})) == TRITON_EXTENSIONS
    assert _extensions(None) == TRITON_EXTENSIONS  # in-process use: unrestricted
