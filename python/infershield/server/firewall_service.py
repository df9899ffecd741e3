"""``infershield.v1.Firewall``: the own Infer/Scan API. Converts and delegates only.

The handlers are built here rather than by the generated ``add_FirewallServicer_to_server``,
whose deserializers raise on unreadable bytes (see :mod:`infershield.server.wire`).
"""

from __future__ import annotations

from typing import Any

import grpc

from infershield.backends.tensors import response_outputs
from infershield.checks.base import Stage
from infershield.errors import InvalidRequest
from infershield.firewall import ChatTurn, Firewall, render_chat
from infershield.pipeline import PipelineResult
from infershield.server.context import call_context
from infershield.server.wire import unary_handler
from infershield.v1 import firewall_pb2 as fpb
from infershield.v1 import firewall_pb2_grpc as fpb_grpc
from infershield.verdict import Verdict


def chat_turns(messages: fpb.ChatMessages) -> list[ChatTurn]:
    """The messages as the firewall's chat turns (a message without a role is the user's)."""
    return [ChatTurn(m.role or "user", m.content) for m in messages.messages]


def render_messages(messages: fpb.ChatMessages) -> str:
    """Chat messages as one text, one ``role: content`` block per message."""
    return render_chat(chat_turns(messages))


def verdict_pb(v: Verdict, explain: bool = True) -> fpb.Verdict:
    """A verdict for the caller; without ``explain`` (``policy.explain_blocks``) its reason
    and details (rule ids) are left out."""
    return fpb.Verdict(
        name=v.check,
        decision=v.decision.value,
        status=v.status.value,
        score=v.score,
        reason=v.reason if explain else "",
        categories=list(v.categories),
        elapsed_ms=v.elapsed_ms,
        rewritten=v.rewritten,
        details=dict(v.details) if explain else {},
    )


def result_pb(
    r: PipelineResult, original: str | None = None, *, explain: bool = True
) -> fpb.ScanResult:
    """The same fields as ``infershield scan``'s JSON line (reasons only with ``explain``)."""
    return fpb.ScanResult(
        blocked=r.blocked,
        decision=r.decision.value,
        score=r.score,
        categories=r.categories,
        verdicts=[verdict_pb(v, explain) for v in r.verdicts],
        elapsed_ms=r.elapsed_ms,
        rewritten=r.text if original is not None and r.text != original else None,
    )


class FirewallService(fpb_grpc.FirewallServicer):  # type: ignore[misc]
    """Infer and Scan, delegated to the :class:`Firewall`."""

    def __init__(self, firewall: Firewall) -> None:
        self.firewall = firewall

    async def Infer(
        self, request: fpb.InferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> fpb.InferResponse:
        which = request.WhichOneof("input")
        if which not in ("prompt", "messages"):
            raise InvalidRequest("set either prompt or messages")
        if not request.model:
            raise InvalidRequest("model is required")
        ctx = call_context(context, self.firewall.policy.config.limits)
        kw: dict[str, Any] = {
            "version": request.model_version,
            "parameters": dict(request.parameters),
            "request_id": request.id,
        }
        if which == "prompt":
            text = request.prompt
            out = await self.firewall.infer_text(request.model, text, ctx, **kw)
        else:
            turns = chat_turns(request.messages)
            text = render_chat(turns)
            out = await self.firewall.infer_chat(request.model, turns, ctx, **kw)
        resp = out.response
        explain = self.firewall.policy.config.policy.explain_blocks
        untrusted = []
        for index, role, r in out.untrusted_results:
            scan = result_pb(r, request.messages.messages[index].content, explain=explain)
            scan.role, scan.message_index = role, index
            untrusted.append(scan)
        reply = fpb.InferResponse(
            model=resp.model_name,
            model_version=resp.model_version,
            id=resp.id,
            input_scan=(
                result_pb(out.input_results[0], text, explain=explain)
                if out.input_results
                else None
            ),
            output_scans=[result_pb(r, explain=explain) for r in out.output_results],
            untrusted_scans=untrusted,
        )
        for t in response_outputs(resp):
            tensor = reply.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
            if t.raw is not None:
                tensor.raw_contents = t.raw
            tensor.text.extend(t.text)
        return reply

    async def Scan(
        self, request: fpb.ScanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> fpb.ScanResponse:
        stage: Stage = "output" if request.stage == fpb.STAGE_OUTPUT else "input"
        ctx = call_context(context, self.firewall.policy.config.limits)
        texts = list(request.texts)
        results = await self.firewall.scan(texts, stage, ctx, model=request.model)
        explain = self.firewall.policy.config.policy.explain_blocks
        return fpb.ScanResponse(
            results=[result_pb(r, t, explain=explain) for r, t in zip(results, texts, strict=True)]
        )


SERVICE_NAME = fpb.DESCRIPTOR.services_by_name["Firewall"].full_name


def add_to_server(firewall: Firewall, server: grpc.aio.Server) -> None:
    service = FirewallService(firewall)
    handlers = {
        "Infer": unary_handler(service.Infer, fpb.InferRequest, fpb.InferResponse),
        "Scan": unary_handler(service.Scan, fpb.ScanRequest, fpb.ScanResponse),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
    )
