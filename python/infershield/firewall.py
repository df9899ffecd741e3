"""The transport-free core: input screening -> backend -> output screening.

:class:`Firewall` holds the current immutable :class:`~infershield.policy.Policy` and the
backend. Every request takes one policy snapshot at its start, so a hot reload
(:meth:`Firewall.swap_policy`) never mixes two policies within a request. Checks run in one
place (:meth:`Firewall.screen`, off the event loop: the native scan and ONNX inference release
the GIL) and the backend is called in one place (:meth:`Firewall.forward`); tracing, deadlines
and limits hook in there. Everything raises :mod:`infershield.errors` types; the server's one
interceptor maps them to gRPC statuses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from infershield.abuse import control as abuse_control
from infershield.audit import AuditLog
from infershield.auth.access import Identity, authorize, request_model
from infershield.backends.base import Backend, CallContext
from infershield.backends.tensors import (
    TextTensor,
    input_texts,
    output_texts,
    rewrite_input,
    rewrite_output,
    uses_shared_memory,
    validate_request_tensors,
)
from infershield.checks.base import CheckContext, Stage
from infershield.config import PolicyConfig
from infershield.errors import (
    BackendUnavailable,
    Blocked,
    FirewallError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    UpstreamError,
)
from infershield.limits import (
    CheckBudget,
    OutputTokenMeter,
    check_inputs,
    check_output_texts,
    check_request_bytes,
)
from infershield.pipeline import PipelineResult
from infershield.policy import Policy
from infershield.reload import pinned_policy
from infershield.telemetry.instrument import (
    current_rpc_name,
    current_trace_id,
    record_block,
    upstream_timer,
)
from infershield.tokens import HFTokenCounter, TokenCounters
from infershield.verdict import Decision

#: Total characters below which a cheap (rules-only) pipeline runs on the event loop.
INLINE_SCREEN_CHARS = 8192

log = logging.getLogger(__name__)

#: Triton protocol extensions whose RPCs are all or partly admin RPCs: ServerMetadata does
#: not advertise them to a caller without the ``admin`` role.
ADMIN_EXTENSIONS: frozenset[str] = frozenset(
    {"model_repository", "model_repository(unload_dependents)", "system_shared_memory",
     "cuda_shared_memory", "trace", "logging"}
)
#: Request parameter that marks the last response of a decoupled request.
FINAL_RESPONSE = "triton_final_response"


@dataclass(frozen=True, slots=True)
class ModelSchema:
    """What a model accepts, from the backend's ModelMetadata and ModelConfig."""

    name: str
    #: input name -> (datatype, shape with -1 for variable dimensions)
    inputs: Mapping[str, tuple[str, tuple[int, ...]]]
    optional: frozenset[str]
    fetched_at: float = field(default_factory=time.monotonic)

    def validate(self, req: pb.ModelInferRequest) -> None:
        """Names, datatypes and shapes against the model: Triton's own checks, done first so
        a malformed request never reaches the backend."""
        for t in req.inputs:
            spec = self.inputs.get(t.name)
            if spec is None:
                raise InvalidRequest(
                    f"model {self.name!r} has no input {t.name!r} "
                    f"(inputs: {', '.join(sorted(self.inputs))})"
                )
            dtype, shape = spec
            if t.datatype != dtype:
                raise InvalidRequest(
                    f"input {t.name!r}: datatype {t.datatype} does not match the model's {dtype}"
                )
            got = list(t.shape)
            if len(got) != len(shape) or any(
                want != -1 and want != have for want, have in zip(shape, got, strict=True)
            ):
                raise InvalidRequest(
                    f"input {t.name!r}: shape {got} does not match the model's {list(shape)}"
                )
        missing = sorted(set(self.inputs) - self.optional - {t.name for t in req.inputs})
        if missing:
            raise InvalidRequest(f"model {self.name!r}: missing input(s) {', '.join(missing)}")


@dataclass(frozen=True, slots=True)
class InferOutcome:
    """A forwarded inference with the screening results that let it through."""

    response: pb.ModelInferResponse
    input_results: tuple[PipelineResult, ...]
    output_results: tuple[PipelineResult, ...]


class Firewall:
    """Screens Triton requests and responses around a backend."""

    def __init__(self, policy: Policy, backend: Backend, *, schema_ttl_s: float = 10.0) -> None:
        self._policy = policy
        self.backend = backend
        self.schema_ttl_s = schema_ttl_s
        self._schemas: dict[tuple[str, str], ModelSchema] = {}
        #: Per-model tokenizers for token limits; models without one get byte limits only.
        self.tokens = TokenCounters()
        #: Tamper-evident record of screening decisions; None when ``audit.path`` is unset.
        self.audit: AuditLog | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def policy(self) -> Policy:
        """The current policy; take it once per request. Inside a server call this is the
        policy the call pinned at its start (``PolicyHolder.pin``), whatever was reloaded."""
        return pinned_policy() or self._policy

    def swap_policy(self, policy: Policy) -> Policy:
        """Install a new policy atomically; returns the old one (close it once drained)."""
        old, self._policy = self._policy, policy
        return old

    async def start(self) -> None:
        await self.backend.start()
        for model, path in self.backend.tokenizer_files().items():
            self.tokens.register(model, HFTokenCounter(path))

    async def close(self) -> None:
        await self.backend.close()
        self._policy.close()
        if self.audit is not None:
            self.audit.close()

    # ------------------------------------------------------------------ seams

    async def screen(
        self,
        policy: Policy,
        texts: Sequence[str],
        stage: Stage,
        ctx: CallContext,
        *,
        model: str = "",
    ) -> list[PipelineResult]:
        """Run ``stage``'s pipeline over ``texts`` (one batch), off the event loop."""
        if not texts:
            return []
        pipeline = policy.input if stage == "input" else policy.output
        meta = {k: v for k, v in ctx.metadata if isinstance(v, str)}
        ctxs = [CheckContext(text=t, stage=stage, model=model, metadata=meta) for t in texts]
        budget = CheckBudget(ctx.deadline, policy.config.limits.check_budget_s)
        try:
            if pipeline.runs_inline and sum(map(len, texts)) <= INLINE_SCREEN_CHARS:
                # Native scans of a few KB take microseconds: a thread hop would cost more.
                ctx.deadline.check(f"screen {stage}")
                results = pipeline.run_batch(ctxs, budget=budget)
            else:
                results = await ctx.deadline.run(
                    asyncio.to_thread(pipeline.run_batch, ctxs, budget=budget),
                    f"screen {stage}",
                )
        finally:
            budget.cancel()  # a caller gone or timed out: its thread runs no further checks
        call = abuse_control.current_call()  # abuse control (issue #19)
        if call is not None:
            call.note_score(max(r.score for r in results))
        if self.audit is not None:
            self.audit.record_results(
                zip(texts, results, strict=True),
                stage=stage,
                model=model,
                caller=ctx.caller,
                key_id=ctx.identity.key_id if ctx.identity is not None else "",
                rpc=current_rpc_name(),
                trace_id=current_trace_id(),
                request_id="" if call is None else call.request_id,
            )
        return results

    async def forward(self, method: str, request: Any, ctx: CallContext) -> Any:
        """The one place a unary RPC reaches the backend."""
        ctx.deadline.check("upstream")
        # The upstream's own budget (backend.timeout_s), never past the request's deadline.
        budget = ctx.deadline.budget("upstream", self.policy.config.backend.timeout_s)
        ctx = dataclasses.replace(ctx, deadline=budget)
        with upstream_timer():
            return await self.backend.call(method, request, ctx)

    # ------------------------------------------------------------------ own API

    async def scan(
        self, texts: Sequence[str], stage: Stage, ctx: CallContext, *, model: str = ""
    ) -> list[PipelineResult]:
        """Screen texts without calling a model (the ``Scan`` RPC and ``infershield scan``)."""
        authorize(ctx.identity, "Scan", model)
        policy = self.policy
        counter = self.tokens.get(model)
        counts = check_inputs(texts, policy.config.limits, counter)
        await abuse_control.charge_tokens(model, texts, sum(counts) if counter else None)
        return await self.screen(policy, texts, stage, ctx, model=model)

    async def infer_text(
        self,
        model: str,
        text: str,
        ctx: CallContext,
        *,
        version: str = "",
        parameters: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> InferOutcome:
        """The ``Infer`` RPC: put ``text`` into the model's text input and run it."""
        authorize(ctx.identity, "Infer", model)
        policy = self.policy
        schema = await self.schema(model, version, ctx)
        names = policy.config.policy.text_tensors
        text_inputs = [
            n for n, (dt, _) in schema.inputs.items() if dt == "BYTES" and (not names or n in names)
        ]
        if not text_inputs:
            raise InvalidRequest(f"model {model!r} has no text (BYTES) input")
        name = text_inputs[0]
        others = sorted(set(schema.inputs) - schema.optional - {name})
        if others:
            raise InvalidRequest(
                f"model {model!r} also needs input(s) {', '.join(others)}; Infer only sends text"
            )
        shape = [1 if d == -1 else d for d in schema.inputs[name][1]]
        if any(d != 1 for d in shape):
            raise InvalidRequest(
                f"model {model!r} input {name!r} has shape {list(schema.inputs[name][1])}; "
                "Infer sends a single text"
            )
        req = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
        req.inputs.add(name=name, datatype="BYTES", shape=shape).contents.bytes_contents.append(
            text.encode("utf-8", "surrogatepass")
        )
        for k, v in (parameters or {}).items():
            req.parameters[k].string_param = v
        return await self._infer(policy, req, ctx)

    # ------------------------------------------------------------------ Triton drop-in

    async def call(self, method: str, request: Any, ctx: CallContext) -> Any:
        """Any unary Triton RPC: the caller's roles and models decide (admin RPCs need the
        ``admin`` role); the repository index and statistics list only the caller's models."""
        authorize(ctx.identity, method, request_model(method, request))
        if method == "ModelInfer":
            return await self.model_infer(request, ctx)
        response = await self.forward(method, request, ctx)
        if method == "ServerMetadata" and ctx.identity is not None and (
            "admin" not in ctx.identity.roles
        ):
            # A client must not be told of features the firewall then refuses.
            kept = [e for e in response.extensions if e not in ADMIN_EXTENSIONS]
            del response.extensions[:]
            response.extensions.extend(kept)
        if ctx.identity is not None and ctx.identity.models is not None:
            _restrict_listing(method, response, ctx.identity)
        return response

    async def model_infer(
        self, req: pb.ModelInferRequest, ctx: CallContext
    ) -> pb.ModelInferResponse:
        """ModelInfer: validate, screen every text element, forward, screen text outputs."""
        return (await self._infer(self.policy, req, ctx)).response

    async def stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], ctx: CallContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """ModelStreamInfer: each request is screened before it goes upstream and each
        response before it goes back. A block or a bad request becomes an in-stream error
        response (with ``triton_final_response``), never a silent truncation; later responses
        of a blocked decoupled request are dropped. Upstream failure ends the stream."""
        authorize(ctx.identity, "ModelStreamInfer")
        policy = self.policy
        out: asyncio.Queue[pb.ModelStreamInferResponse | BaseException | None] = asyncio.Queue()
        upstream: asyncio.Queue[pb.ModelInferRequest | None] = asyncio.Queue()
        models: dict[str, str] = {}

        async def pump_in() -> None:
            try:
                async for req in requests:
                    try:
                        authorize(ctx.identity, "ModelStreamInfer", req.model_name)
                        await self._check_request(policy, req, ctx)
                    except FirewallError as exc:
                        await out.put(_stream_error(req.id, req.model_name, req.model_version, exc))
                        continue
                    models[req.id] = req.model_name
                    await upstream.put(req)
            finally:
                await upstream.put(None)

        async def upstream_requests() -> AsyncIterator[pb.ModelInferRequest]:
            while (r := await upstream.get()) is not None:
                yield r

        async def pump_out() -> None:
            blocked: set[str] = set()
            # Output tokens of a decoupled request add up over all its responses.
            meters: dict[str, OutputTokenMeter] = {}
            try:
                async for resp in self.backend.stream_infer(upstream_requests(), ctx):
                    ir = resp.infer_response
                    if ir.id and ir.id in blocked:
                        continue
                    if not resp.error_message:
                        counter = self.tokens.get(ir.model_name)
                        limit = policy.config.limits.max_output_tokens
                        meter = (
                            meters.setdefault(ir.id, OutputTokenMeter(limit, counter))
                            if counter is not None and ir.id
                            else None
                        )
                        try:
                            await self._check_response(policy, ir, ctx, meter)
                        except FirewallError as exc:
                            if ir.id:
                                blocked.add(ir.id)
                            await out.put(
                                _stream_error(ir.id, ir.model_name, ir.model_version, exc)
                            )
                            continue
                    await out.put(resp)
                await out.put(None)
            except BaseException as exc:
                await out.put(exc)

        tasks = [asyncio.create_task(pump_in()), asyncio.create_task(pump_out())]
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ internals

    async def schema(self, model: str, version: str, ctx: CallContext) -> ModelSchema:
        """The model's inputs, cached for ``schema_ttl_s``; unknown models are NOT_FOUND."""
        key = (model, version)
        cached = self._schemas.get(key)
        if cached is not None and time.monotonic() - cached.fetched_at < self.schema_ttl_s:
            return cached
        if not model:
            raise InvalidRequest("the request names no model")
        try:
            meta = await self.forward(
                "ModelMetadata", pb.ModelMetadataRequest(name=model, version=version), ctx
            )
            cfg = await self.forward(
                "ModelConfig", pb.ModelConfigRequest(name=model, version=version), ctx
            )
        except UpstreamError as exc:
            if exc.grpc_code.name in ("NOT_FOUND", "INVALID_ARGUMENT"):
                raise NotFound(
                    f"unknown model {model!r}" + (f" version {version!r}" if version else "")
                ) from None
            raise
        optional = frozenset(i.name for i in cfg.config.input if i.optional)
        schema = ModelSchema(
            model, {t.name: (t.datatype, tuple(t.shape)) for t in meta.inputs}, optional
        )
        self._schemas[key] = schema
        return schema

    async def _check_request(
        self, policy: Policy, req: pb.ModelInferRequest, ctx: CallContext
    ) -> tuple[PipelineResult, ...]:
        cfg = policy.config
        check_request_bytes(req.ByteSize(), cfg.limits)
        if uses_shared_memory(req) and not cfg.policy.allow_shared_memory:
            raise PermissionDenied(
                "the request uses shared-memory regions, whose contents the firewall cannot "
                "inspect; the policy does not allow them (policy.allow_shared_memory)"
            )
        validate_request_tensors(req)
        (await self.schema(req.model_name, req.model_version, ctx)).validate(req)
        tensors = input_texts(req, cfg.policy.text_tensors)
        texts = [s for t in tensors for s in t.texts]
        counter = self.tokens.get(req.model_name)
        counts = check_inputs(texts, cfg.limits, counter)
        await abuse_control.charge_tokens(req.model_name, texts, sum(counts) if counter else None)
        results = await self.screen(policy, texts, "input", ctx, model=req.model_name)
        _apply(results, tensors, "input", lambda t, s: rewrite_input(req, t, s), cfg.policy)
        return tuple(results)

    async def _check_response(
        self,
        policy: Policy,
        resp: pb.ModelInferResponse,
        ctx: CallContext,
        meter: OutputTokenMeter | None = None,
    ) -> tuple[PipelineResult, ...]:
        tensors = output_texts(resp, policy.config.policy.text_tensors)
        texts = [s for t in tensors for s in t.texts]
        counter = self.tokens.get(resp.model_name)
        n = None
        if counter is not None:
            n = check_output_texts(texts, policy.config.limits, counter, meter)
        await abuse_control.charge_tokens(resp.model_name, texts, n, output=True)
        results = await self.screen(policy, texts, "output", ctx, model=resp.model_name)
        pcfg = policy.config.policy
        _apply(results, tensors, "output", lambda t, s: rewrite_output(resp, t, s), pcfg)
        return tuple(results)

    async def _infer(
        self, policy: Policy, req: pb.ModelInferRequest, ctx: CallContext
    ) -> InferOutcome:
        in_results = await self._check_request(policy, req, ctx)
        resp = await self.forward("ModelInfer", req, ctx)
        try:
            out_results = await self._check_response(policy, resp, ctx)
        except InvalidRequest as exc:
            # A malformed *response* is the backend's fault, not the caller's.
            raise BackendUnavailable(
                f"the backend sent an unreadable response: {exc.message}"
            ) from None
        return InferOutcome(resp, in_results, out_results)


def _restrict_listing(method: str, response: Any, identity: Identity) -> None:
    """Drop the models ``identity`` may not use from a listing response."""
    field = {"RepositoryIndex": "models", "ModelStatistics": "model_stats"}.get(method)
    if field is None:
        return
    entries = getattr(response, field)
    keep = [m for m in entries if identity.may_use(m.name)]
    del entries[:]
    entries.extend(keep)


def _apply(
    results: Sequence[PipelineResult],
    tensors: Sequence[TextTensor],
    stage: Stage,
    rewrite: Any,
    policy: PolicyConfig,
) -> None:
    """Raise Blocked for the first blocked element; apply REDACT rewrites to the tensors.

    What the caller learns follows ``policy.explain_blocks``; the span gets the detail."""
    it = iter(results)
    for t in tensors:
        mine = [next(it) for _ in t.texts]
        for i, r in enumerate(mine):
            if r.blocked:
                v = r.blocking_verdict
                assert v is not None  # a blocked result has a blocking verdict
                exc = Blocked(
                    check=v.check,
                    reason=f"{v.reason} ({stage} {t.name!r} element {i})",
                    categories=v.categories or tuple(r.categories),
                    stage=stage,
                    score=r.score,
                    explain=policy.explain_blocks,
                    details=v.details,
                )
                record_block(exc)
                raise exc
        if any(r.decision is Decision.REDACT for r in mine):
            rewrite(t, [r.text for r in mine])


def _stream_error(
    request_id: str, model: str, version: str, exc: FirewallError
) -> pb.ModelStreamInferResponse:
    resp = pb.ModelStreamInferResponse(
        error_message=f"{exc.grpc_code.name}: {exc.message}",
        infer_response=pb.ModelInferResponse(
            id=request_id, model_name=model, model_version=version
        ),
    )
    resp.infer_response.parameters[FINAL_RESPONSE].bool_param = True
    return resp
