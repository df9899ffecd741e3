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

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from infershield.abuse import control as abuse_control
from infershield.audit import AuditLog
from infershield.auth.access import Identity, authorize, request_model
from infershield.backends.base import Backend
from infershield.backends.tensors import (
    TextTensor,
    encode_bytes,
    input_texts,
    output_texts,
    rewrite_input,
    rewrite_output,
    uses_shared_memory,
    validate_request_tensors,
)
from infershield.call import CallContext
from infershield.canary import new_canary, plant, plant_in_chat
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
from infershield.limits.budgets import (
    OutputTokenMeter,
    check_inputs,
    check_output_texts,
    check_request_bytes,
)
from infershield.limits.deadline import CheckBudget
from infershield.pipeline import Pipeline, PipelineResult
from infershield.policy import UNTRUSTED_ROLES, Policy
from infershield.reload import pinned_policy
from infershield.stream import StreamScreener
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
#: Request parameter asking Triton for a final response even when it carries no data.
EMPTY_FINAL = "triton_enable_empty_final_response"


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
    #: (message index, role, result) for each untrusted (``tool``/``document``) message.
    untrusted_results: tuple[tuple[int, str, PipelineResult], ...] = ()
    #: ``response`` as the bytes the backend sent, when output screening changed nothing
    #: (None otherwise, or when the backend does not hand out its bytes): sent on as is.
    wire: bytes | None = None


@dataclass(frozen=True, slots=True)
class StreamError:
    """One request of a stream failed (blocked, invalid, over a limit); the stream goes on.
    The servicer tells the caller in-band, in ModelStreamInfer's ``error_message``."""

    request_id: str
    model: str
    version: str
    error: FirewallError


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One chat message of ``Infer``: its role and its text."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Protected:
    """What a request's output must not reveal: its system prompt and its canaries."""

    system_prompt: str = ""
    canaries: tuple[str, ...] = ()


def render_chat(turns: Sequence[ChatTurn]) -> str:
    """Chat messages as one text, one ``role: content`` block per message."""
    if not turns:
        raise InvalidRequest("messages is empty")
    return "\n".join(f"{t.role or 'user'}: {t.content}" for t in turns)


class Firewall:
    """Screens Triton requests and responses around a backend."""

    def __init__(
        self,
        policy: Policy,
        backend: Backend,
        *,
        audit: AuditLog | None = None,
        schema_ttl_s: float = 10.0,
    ) -> None:
        """``audit`` records screening decisions (None when ``audit.path`` is unset); the
        firewall closes it in :meth:`close`."""
        self._policy = policy
        self.backend = backend
        self.schema_ttl_s = schema_ttl_s
        self._schemas: dict[tuple[str, str], ModelSchema] = {}
        #: Per-model tokenizers for token limits; models without one get byte limits only.
        self.tokens = TokenCounters()
        #: Tamper-evident record of screening decisions; None when ``audit.path`` is unset.
        self.audit = audit

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
        protected: Protected | None = None,
        pipeline: Pipeline | None = None,
        role: str = "",
    ) -> list[PipelineResult]:
        """Run ``stage``'s pipeline (or ``pipeline``) over ``texts`` (one batch), off the
        event loop. ``protected`` is what the output must not reveal; ``role`` labels the
        verdicts and the audit record with the chat role the texts came from."""
        if not texts:
            return []
        if pipeline is None:
            pipeline = policy.input if stage == "input" else policy.output
        meta = {k: v for k, v in ctx.metadata if isinstance(v, str)}
        prot = protected or Protected()
        ctxs = [
            CheckContext(
                text=t,
                stage=stage,
                model=model,
                metadata=meta,
                system_prompt=prot.system_prompt,
                canaries=prot.canaries,
            )
            for t in texts
        ]
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
        if role:
            results = [_with_role(r, role) for r in results]
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
                role=role,
            )
        return results

    async def forward(self, method: str, request: Any, ctx: CallContext) -> Any:
        """The one place a unary RPC reaches the backend (with :meth:`forward_wire`, its
        bytes-preserving twin for ModelInfer)."""
        with upstream_timer():
            return await self.backend.call(method, request, self._upstream_ctx(ctx))

    async def forward_wire(
        self, method: str, request: Any, wire: bytes | None, ctx: CallContext
    ) -> tuple[Any, bytes | None]:
        """:meth:`forward` for lean forwarding: ``wire`` is ``request`` as the caller's bytes
        (None: serialise ``request``); returns the response and its bytes as the backend sent
        them, where it has them (:meth:`Backend.call_wire`)."""
        ctx = self._upstream_ctx(ctx)
        with upstream_timer():
            return await self.backend.call_wire(method, request, wire, ctx)

    def _upstream_ctx(self, ctx: CallContext) -> CallContext:
        ctx.deadline.check("upstream")
        # The upstream's own budget (backend.timeout_s), never past the request's deadline.
        budget = ctx.deadline.budget("upstream", self.policy.config.backend.timeout_s)
        return dataclasses.replace(ctx, deadline=budget)

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
        protected = Protected(policy.config.policy.system_prompts.get(model, ""))
        return await self._infer_text(
            policy, model, text, ctx, version, parameters, request_id, protected, None
        )

    async def infer_chat(
        self,
        model: str,
        turns: Sequence[ChatTurn],
        ctx: CallContext,
        *,
        version: str = "",
        parameters: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> InferOutcome:
        """``Infer`` with chat messages. ``tool``/``document`` messages are untrusted content,
        screened by the policy's untrusted pipeline and labelled with their role; the whole
        chat is then screened as input. The system messages are what the output must not
        reproduce, and with ``policy.canary`` a fresh canary is planted in them."""
        policy = self.policy
        turns = list(turns)
        if not turns:
            raise InvalidRequest("messages is empty")
        untrusted: list[tuple[int, str, PipelineResult]] = []
        for role in sorted({t.role for t in turns if t.role in UNTRUSTED_ROLES}):
            idx = [i for i, t in enumerate(turns) if t.role == role]
            texts = [turns[i].content for i in idx]
            check_inputs(texts, policy.config.limits, self.tokens.get(model))
            results = await self.screen(
                policy, texts, "input", ctx, model=model, pipeline=policy.untrusted, role=role
            )
            for i, r in zip(idx, results, strict=True):
                if r.blocked:
                    raise _blocked(
                        r, f"message {i}", "input", policy.config.policy.explain_blocks, role
                    )
                if r.decision is Decision.REDACT:
                    turns[i] = ChatTurn(role, r.text)
                untrusted.append((i, role, r))
        cfg = policy.config.policy
        system = "\n".join(t.content for t in turns if t.role == "system")
        protected = Protected(system or cfg.system_prompts.get(model, ""))
        planter = None
        if cfg.canary and system:
            token = new_canary()
            protected = dataclasses.replace(protected, canaries=(token,))

            def planter(text: str) -> str:
                return plant_in_chat(text, token)

        out = await self._infer_text(
            policy, model, render_chat(turns), ctx, version, parameters, request_id,
            protected, planter,
        )
        return dataclasses.replace(out, untrusted_results=tuple(sorted(untrusted)))

    async def _infer_text(
        self,
        policy: Policy,
        model: str,
        text: str,
        ctx: CallContext,
        version: str,
        parameters: Mapping[str, str] | None,
        request_id: str,
        protected: Protected,
        planter: Any,
    ) -> InferOutcome:
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
        return await self._infer(policy, req, ctx, protected=protected, planter=planter)

    # ------------------------------------------------------------------ Triton drop-in

    async def call(
        self, method: str, request: Any, ctx: CallContext, *, wire: bytes | None = None
    ) -> Any:
        """Any unary Triton RPC: the caller's roles and models decide (admin RPCs need the
        ``admin`` role); the repository index and statistics list only the caller's models.

        ``wire`` (ModelInfer only) is ``request`` as the bytes the caller sent. Then the
        request goes upstream as those bytes unless screening rewrote it, and the response
        comes back as the backend's bytes (``bytes``) unless output screening rewrote it."""
        authorize(ctx.identity, method, request_model(method, request))
        if method == "ModelInfer":
            if wire is None:
                return await self.model_infer(request, ctx)
            out = await self._infer(self.policy, request, ctx, wire=wire)
            return out.wire if out.wire is not None else out.response
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
    ) -> AsyncIterator[pb.ModelStreamInferResponse | StreamError]:
        """ModelStreamInfer: each request is screened before it goes upstream. The responses
        of a decoupled request (one with an id) are screened as one text across response
        boundaries (:class:`~infershield.stream.StreamScreener`): the last
        ``policy.stream_holdback_chars`` are held back until what follows shows they are
        safe, and flushed with the final response. A block or a bad request becomes a
        :class:`StreamError` (the servicer sends it as an in-stream error response with
        ``triton_final_response``), never a silent truncation; later responses of a blocked
        request are dropped. Upstream failure ends the stream."""
        authorize(ctx.identity, "ModelStreamInfer")
        policy = self.policy
        out: asyncio.Queue[pb.ModelStreamInferResponse | StreamError | BaseException | None] = (
            asyncio.Queue()
        )
        upstream: asyncio.Queue[pb.ModelInferRequest | None] = asyncio.Queue()
        protections: dict[str, Protected] = {}
        # Ids whose caller did not ask for an empty final response (the firewall always does,
        # to flush the held-back tail, and drops the empty ones the caller did not ask for).
        no_empty_final: set[str] = set()
        # Requests without an id cannot be told apart: their responses are screened one by
        # one, against every id-less request's system prompt and canaries.
        anon = Protected()

        async def pump_in() -> None:
            nonlocal anon
            try:
                async for req in requests:
                    try:
                        authorize(ctx.identity, "ModelStreamInfer", req.model_name)
                        await self._check_request(policy, req, ctx)
                        prot = self._protect_request(policy, req)
                    except FirewallError as exc:
                        await out.put(StreamError(req.id, req.model_name, req.model_version, exc))
                        continue
                    if req.id:
                        protections[req.id] = prot
                        asked = req.parameters.get(EMPTY_FINAL)
                        if asked is None or not asked.bool_param:
                            no_empty_final.add(req.id)
                        req.parameters[EMPTY_FINAL].bool_param = True
                    else:
                        prompt = "\n".join(x for x in (anon.system_prompt, prot.system_prompt) if x)
                        anon = Protected(prompt, (*anon.canaries, *prot.canaries))
                    await upstream.put(req)
            except DecodeError:
                # grpc parses each request as it is read: an unreadable one ends the stream
                # with an error, never as if the caller had sent nothing more.
                await out.put(InvalidRequest("a request of the stream is not a readable "
                                             "ModelInferRequest"))
            except Exception as exc:
                await out.put(exc)
            finally:
                await upstream.put(None)

        async def upstream_requests() -> AsyncIterator[pb.ModelInferRequest]:
            while (r := await upstream.get()) is not None:
                yield r

        async def pump_out() -> None:
            blocked: set[str] = set()
            # Output tokens of a decoupled request add up over all its responses.
            meters: dict[str, OutputTokenMeter] = {}
            streams: dict[str, _OutputStream] = {}
            try:
                async for resp in self.backend.stream_infer(upstream_requests(), ctx):
                    ir = resp.infer_response
                    if ir.id and ir.id in blocked:
                        if _is_final(ir):
                            blocked.discard(ir.id)  # the id may now be reused
                        continue
                    if resp.error_message:
                        streams.pop(ir.id, None)  # held-back text of a failed request is dropped
                    else:
                        counter = self.tokens.get(ir.model_name)
                        limit = policy.config.limits.max_output_tokens
                        meter = (
                            meters.setdefault(ir.id, OutputTokenMeter(limit, counter))
                            if counter is not None and ir.id
                            else None
                        )
                        try:
                            if ir.id:
                                prot = protections.get(ir.id) or Protected()
                                state = streams.get(ir.id)
                                if state is None:
                                    state = streams[ir.id] = _OutputStream(
                                        self._holdback(policy, prot)
                                    )
                                await self._screen_stream_response(
                                    policy, ir, ctx, meter, state, prot
                                )
                            else:
                                await self._check_response(policy, ir, ctx, meter, anon)
                        except FirewallError as exc:
                            if ir.id:
                                streams.pop(ir.id, None)
                                meters.pop(ir.id, None)
                                if not _is_final(ir):
                                    blocked.add(ir.id)
                            await out.put(
                                StreamError(ir.id, ir.model_name, ir.model_version, exc)
                            )
                            continue
                    if ir.id and (resp.error_message or _is_final(ir)):
                        streams.pop(ir.id, None)
                        meters.pop(ir.id, None)
                        protections.pop(ir.id, None)
                        if ir.id in no_empty_final and not resp.error_message:
                            no_empty_final.discard(ir.id)
                            if not ir.outputs:
                                continue  # an empty final the caller did not ask for
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

    @staticmethod
    def _holdback(policy: Policy, protected: Protected) -> int:
        """A request's hold-back: the policy's, or more when its system prompt needs it."""
        leak = policy.prompt_leak
        need = leak.span_chars(protected.system_prompt) if leak and protected.system_prompt else 0
        return max(policy.stream_holdback, need)

    async def _screen_stream_response(
        self,
        policy: Policy,
        resp: pb.ModelInferResponse,
        ctx: CallContext,
        meter: OutputTokenMeter | None,
        state: _OutputStream,
        protected: Protected,
    ) -> None:
        """Screen one response of a decoupled request as part of its whole output, and
        rewrite its text tensors to what may be released now (see :mod:`infershield.stream`).
        Raises Blocked when the output is blocked."""
        final = _is_final(resp)
        tensors = output_texts(resp, policy.config.policy.text_tensors)
        counter = self.tokens.get(resp.model_name)
        if counter is not None:
            texts = [s for t in tensors for s in t.texts]
            check_output_texts(texts, policy.config.limits, counter, meter)
        jobs: list[tuple[tuple[str, int], StreamScreener, str | None]] = []
        for t in tensors:
            state.layout[t.name] = (list(resp.outputs[t.index].shape), t.raw)
            for i, text in enumerate(t.texts):
                sc = state.screeners.get((t.name, i))
                if sc is None:
                    sc = state.screeners[(t.name, i)] = StreamScreener(state.holdback)
                jobs.append(((t.name, i), sc, sc.window(text, final=final)))
        carried = {key for key, _, _ in jobs}
        tails = [key for key, sc in state.screeners.items() if key not in carried]
        if final:
            # Held-back text of outputs this last response does not carry (an empty final).
            for key in tails:
                sc = state.screeners[key]
                jobs.append((key, sc, sc.window("", final=True)))
        windows = [w for _, _, w in jobs if w is not None]
        results = iter(
            await self.screen(
                policy, windows, "output", ctx, model=resp.model_name, protected=protected
            )
        )
        try:
            released = {
                key: (sc.advance(next(results)) if w is not None else "")
                for key, sc, w in jobs
            }
        except Blocked as exc:
            raise _disclosed(exc, policy.config.policy) from None
        for t in tensors:
            rewrite_output(resp, t, [released[(t.name, i)] for i in range(len(t.texts))])
        if final:
            _add_tails(resp, state, {k: released[k] for k in tails if released.get(k)})

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
            if exc.unknown_model:
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
        self,
        policy: Policy,
        req: pb.ModelInferRequest,
        ctx: CallContext,
        wire: bytes | None = None,
    ) -> tuple[PipelineResult, ...]:
        cfg = policy.config
        # With lean forwarding the caller's own bytes go upstream, and they can be far more
        # than ``req`` (a field repeated on the wire is parsed once): count what arrived.
        # ByteSize() still counts, as the re-serialised ``req`` can be the larger one.
        size = req.ByteSize()
        check_request_bytes(size if wire is None else max(size, len(wire)), cfg.limits)
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
        protected: Protected | None = None,
    ) -> tuple[PipelineResult, ...]:
        tensors = output_texts(resp, policy.config.policy.text_tensors)
        texts = [s for t in tensors for s in t.texts]
        counter = self.tokens.get(resp.model_name)
        n = None
        if counter is not None:
            n = check_output_texts(texts, policy.config.limits, counter, meter)
        await abuse_control.charge_tokens(resp.model_name, texts, n, output=True)
        results = await self.screen(
            policy, texts, "output", ctx, model=resp.model_name, protected=protected
        )
        pcfg = policy.config.policy
        _apply(results, tensors, "output", lambda t, s: rewrite_output(resp, t, s), pcfg)
        return tuple(results)

    def _protect_request(self, policy: Policy, req: pb.ModelInferRequest) -> Protected:
        """The system prompt of a Triton request (``policy.system_prompt_tensor``, else the
        model's ``policy.system_prompts`` entry), with a canary planted in that tensor when
        ``policy.canary`` is on. Runs after input screening."""
        cfg = policy.config.policy
        prompt = cfg.system_prompts.get(req.model_name, "")
        canaries: tuple[str, ...] = ()
        if cfg.system_prompt_tensor:
            for t in input_texts(req, (cfg.system_prompt_tensor,)):
                prompt = "\n".join(x for x in (*t.texts, prompt) if x)
                if cfg.canary:
                    token = new_canary()
                    canaries = (token,)
                    rewrite_input(req, t, [plant(x, token) for x in t.texts])
        return Protected(prompt, canaries)

    async def _infer(
        self,
        policy: Policy,
        req: pb.ModelInferRequest,
        ctx: CallContext,
        *,
        protected: Protected | None = None,
        planter: Any = None,
        wire: bytes | None = None,
    ) -> InferOutcome:
        in_results = await self._check_request(policy, req, ctx, wire)
        planted = False
        if protected is None:
            protected = self._protect_request(policy, req)
            planted = bool(protected.canaries)  # planted into the request's tensor
        if planter is not None:
            # Planted after screening: the canary is never echoed back in a scan result.
            contents = req.inputs[0].contents.bytes_contents
            contents[0] = planter(contents[0].decode("utf-8", "surrogatepass")).encode(
                "utf-8", "surrogatepass"
            )
        # Lean forwarding: the caller's bytes go upstream unless the request was changed
        # here (a redaction, a planted canary). Fail closed: any doubt sends ``req``.
        if planter is not None or planted or _rewrote(in_results):
            wire = None
        resp, resp_wire = await self.forward_wire("ModelInfer", req, wire, ctx)
        try:
            out_results = await self._check_response(policy, resp, ctx, protected=protected)
        except InvalidRequest as exc:
            # A malformed *response* is the backend's fault, not the caller's.
            raise BackendUnavailable(
                f"the backend sent an unreadable response: {exc.message}"
            ) from None
        if _rewrote(out_results):
            resp_wire = None  # the redacted ``resp`` goes back, not the backend's bytes
        return InferOutcome(resp, in_results, out_results, wire=resp_wire)


def _rewrote(results: Sequence[PipelineResult]) -> bool:
    """Whether :func:`_apply` rewrote a tensor for these results (it does for any REDACT)."""
    return any(r.decision is Decision.REDACT for r in results)


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
                raise _blocked(r, f"{stage} {t.name!r} element {i}", stage, policy.explain_blocks)
        if any(r.decision is Decision.REDACT for r in mine):
            rewrite(t, [r.text for r in mine])


@dataclass(slots=True)
class _OutputStream:
    """The output of one decoupled request so far: a screener per text element."""

    holdback: int
    screeners: dict[tuple[str, int], StreamScreener] = field(default_factory=dict)
    #: Output name -> (shape, raw) as last seen, to carry a flushed tail.
    layout: dict[str, tuple[list[int], bool]] = field(default_factory=dict)


def _add_tails(
    resp: pb.ModelInferResponse, state: _OutputStream, tails: Mapping[tuple[str, int], str]
) -> None:
    """Add the flushed tails of outputs ``resp`` does not carry, laid out as last seen."""
    for name in sorted({n for n, _ in tails}):
        shape, raw = state.layout[name]
        count = max(i for n, i in tails if n == name) + 1
        elems = [tails.get((name, i), "").encode("utf-8") for i in range(count)]
        n = 1
        for d in shape:
            n *= d
        if n != count:
            shape = [count]
        use_raw = bool(resp.raw_output_contents) or (raw and not resp.outputs)
        t = resp.outputs.add(name=name, datatype="BYTES", shape=shape)
        if use_raw:
            resp.raw_output_contents.append(encode_bytes(elems))
        else:
            t.contents.bytes_contents.extend(elems)


def _blocked(
    result: PipelineResult, where: str, stage: str, explain: bool, role: str = ""
) -> Blocked:
    """The Blocked error for a blocked ``result`` (its reason tagged with ``where``),
    recorded on the RPC's span; what the caller learns follows ``explain``."""
    v = result.blocking_verdict
    assert v is not None  # a blocked result has a blocking verdict
    exc = Blocked(
        check=v.check,
        reason=f"{v.reason} ({where})",
        categories=v.categories or tuple(result.categories),
        stage=stage,
        score=result.score,
        explain=explain,
        details=v.details,
        role=role,
    )
    record_block(exc)
    return exc


def _disclosed(exc: Blocked, policy: PolicyConfig) -> Blocked:
    """A block raised by the transport-free stream screener, told to the caller as
    ``policy.explain_blocks`` says and recorded on the span."""
    out = Blocked(
        check=exc.check,
        reason=exc.reason,
        categories=exc.categories,
        stage=exc.stage,
        score=exc.score,
        explain=policy.explain_blocks,
        details=exc.details,
        role=exc.role,
    )
    record_block(out)
    return out


def _with_role(result: PipelineResult, role: str) -> PipelineResult:
    """``result`` with ``role`` in every verdict's details."""
    verdicts = tuple(
        dataclasses.replace(v, details=(*v.details, ("role", role))) for v in result.verdicts
    )
    return dataclasses.replace(result, verdicts=verdicts)


def _is_final(resp: pb.ModelInferResponse) -> bool:
    """Whether this is the last response of its request. A response without the parameter
    is complete on its own (a model that is not decoupled)."""
    if FINAL_RESPONSE not in resp.parameters:
        return True
    return bool(resp.parameters[FINAL_RESPONSE].bool_param)
