"""The span and metric sites the firewall calls: RPC, check, detector batch, upstream call.

Span tree of one RPC::

    <rpc method>                 SERVER  (continues the caller's W3C trace context)
    ├── check <name>             INTERNAL, one per check per batch (input checks)
    │   └── detector.batch       INTERNAL, a batched classifier call inside a check
    ├── upstream <method>        CLIENT  (its context is injected into the Triton metadata)
    └── check <name>             INTERNAL (output checks)

A check span covers one check over one *batch* of texts (a request with several text
elements runs each check once over all of them). Its attributes aggregate the batch: the
decision is the strongest one (block > redact > allow), the status the worst (error > ok >
skipped), the score the maximum, the category the sorted union over non-allow verdicts,
and ``infershield.batch_size`` / ``infershield.check.blocked`` give the counts. Attributes
never hold raw text: no prompt, no completion, no check reason (a reason may quote a match).

When tracing is off every helper returns one shared ``nullcontext``; inside an unsampled
trace the child helpers skip span creation altogether, so sampling costs almost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, StatusCode

from infershield.telemetry import metrics as _metrics
from infershield.telemetry.tracing import STATE, extract_context
from infershield.verdict import Decision, Status, Verdict

if TYPE_CHECKING:
    from infershield.checks.base import CheckContext
    from infershield.pipeline import PipelineResult

_NOOP: AbstractContextManager[None] = contextlib.nullcontext(None)

ATTR_CHECK_NAME = "infershield.check.name"
ATTR_CHECK_DECISION = "infershield.check.decision"
ATTR_CHECK_STATUS = "infershield.check.status"
ATTR_CHECK_SCORE = "infershield.check.score"
ATTR_CHECK_CATEGORY = "infershield.check.category"
ATTR_CHECK_BLOCKED = "infershield.check.blocked"
ATTR_STAGE = "infershield.stage"
ATTR_BATCH_SIZE = "infershield.batch_size"
ATTR_MODEL = "infershield.model"
ATTR_DECISION = "infershield.decision"
ATTR_BLOCKED_BY = "infershield.blocked_by"
ATTR_BLOCK_DETAIL = "infershield.block."
#: OpenTelemetry's semantic convention for the authenticated caller.
ATTR_TENANT = "enduser.id"
ATTR_KEY_ID = "infershield.key_id"
ATTR_AUTH_SOURCE = "infershield.auth.source"

_DECISION_RANK = {Decision.ALLOW: 0, Decision.REDACT: 1, Decision.BLOCK: 2}
_STATUS_RANK = {Status.SKIPPED: 0, Status.OK: 1, Status.ERROR: 2}


def _child_allowed() -> bool:
    """False when tracing is off or the current trace is not sampled (children would not be)."""
    if not STATE.enabled:
        return False
    rpc = _RPC.get()
    if rpc is not None:  # one contextvar read instead of OpenTelemetry's context lookups
        return rpc.traced
    parent = trace.get_current_span()
    if parent.get_span_context().is_valid:
        return parent.is_recording()
    return _draw_root()


def _draw_root() -> bool:
    """The sampling decision for a new root: a random draw at the configured ratio.

    Taken before any span exists, so the unsampled majority costs one ``random()`` instead of
    a non-recording span, a context attach and a propagator pass.
    """
    ratio = STATE.root_ratio
    return ratio >= 1.0 or (ratio > 0.0 and random.random() < ratio)


# --------------------------------------------------------------------------- checks


def check_span(name: str, stage: str, batch_size: int) -> AbstractContextManager[Span | None]:
    """A span around one check over one batch; yields None when not traced."""
    if not _child_allowed():
        return _NOOP
    return STATE.tracer.start_as_current_span(
        f"check {name}",
        attributes={ATTR_CHECK_NAME: name, ATTR_STAGE: stage, ATTR_BATCH_SIZE: batch_size},
    )


def record_check(
    span: Span | None, name: str, stage: str, verdicts: Sequence[Verdict], seconds: float
) -> None:
    """Record one check's outcome on its span (aggregated over the batch) and in the metrics."""
    m = _metrics.active()
    if m is not None:
        m.observe_check(name, stage, verdicts, seconds)
    if span is None or not span.is_recording() or not verdicts:
        return
    decision = max((v.decision for v in verdicts), key=_DECISION_RANK.__getitem__)
    status = max((v.status for v in verdicts), key=_STATUS_RANK.__getitem__)
    categories = sorted(
        {c for v in verdicts if v.decision is not Decision.ALLOW for c in v.categories}
    )
    span.set_attributes({
        ATTR_CHECK_DECISION: decision.value,
        ATTR_CHECK_STATUS: status.value,
        ATTR_CHECK_SCORE: max(v.score for v in verdicts),
        ATTR_CHECK_CATEGORY: ",".join(categories) or "none",
        ATTR_CHECK_BLOCKED: sum(v.decision is Decision.BLOCK for v in verdicts),
    })
    if status is Status.ERROR:
        # The pipeline's error reason names only the exception type and on_error.
        failed = next(v for v in verdicts if v.status is Status.ERROR)
        span.set_status(StatusCode.ERROR, failed.reason)


# --------------------------------------------------------------------------- detectors


def detector_span(model: str, batch_size: int) -> AbstractContextManager[Span | None]:
    """A span around one batched detector (classifier) call; also records the batch size.

    Only traced inside a recording span (a request): a micro-batcher thread serving many
    requests at once has no single parent, and must not start a root trace per batch.
    """
    m = _metrics.active()
    if m is not None:
        m.batch_size.labels("detector").observe(batch_size)
    if not STATE.enabled or not trace.get_current_span().is_recording():
        return _NOOP
    return STATE.tracer.start_as_current_span(
        "detector.batch",
        attributes={"infershield.detector.model": model, ATTR_BATCH_SIZE: batch_size},
    )


def capture_context() -> Context | None:
    """The current trace context when it is sampled, to hand to another thread (a batcher)."""
    if not STATE.enabled or not trace.get_current_span().is_recording():
        return None
    return otel_context.get_current()


def detector_batch_span(
    model: str, batch_size: int, contexts: Sequence[Context | None]
) -> AbstractContextManager[Span | None]:
    """A span for one micro-batch that serves several requests (from :func:`capture_context`).

    Its parent is the first traced request's span; every other traced request is a link, so
    each request's trace shows the batch it rode in. Records the batch size either way.
    """
    m = _metrics.active()
    if m is not None:
        m.batch_size.labels("detector").observe(batch_size)
    traced = [c for c in contexts if c is not None]
    if not traced or not STATE.enabled:
        return _NOOP
    links = [Link(trace.get_current_span(c).get_span_context()) for c in traced[1:]]
    return STATE.tracer.start_as_current_span(
        "detector.batch",
        context=traced[0],
        links=links,
        attributes={"infershield.detector.model": model, ATTR_BATCH_SIZE: batch_size,
                    "infershield.detector.requests": len(contexts)},
    )


# --------------------------------------------------------------------------- RPCs


class RpcScope:
    """One RPC being served: its span (or None) and what its metrics need.

    The firewall fills it in as the request goes (model, the strongest screening decision);
    :func:`set_rpc_status` records the final gRPC code. On exit, ``infershield_requests_total``
    and the ``total`` latency are recorded. ``decision`` is ``none`` when nothing was screened
    (metadata RPCs, requests rejected before screening).
    """

    __slots__ = ("_t0", "code", "decision", "method", "model", "span", "tenant", "traced")

    def __init__(self, method: str, span: Span | None, model: str = "") -> None:
        self.method = method
        self.span = span
        #: Whether this RPC's trace is sampled: children are created only then.
        self.traced = span is not None and span.is_recording()
        self.model = model
        self.decision: Decision | None = None
        self.code: grpc.StatusCode | None = None
        #: The caller's tenant once authenticated ("" before that, or when refused).
        self.tenant = ""
        self._t0 = time.perf_counter()

    def note_decision(self, decision: Decision) -> None:
        if self.decision is None or _DECISION_RANK[decision] > _DECISION_RANK[self.decision]:
            self.decision = decision

    def _finish(self, exc: BaseException | None) -> None:
        m = _metrics.active()
        if m is None:
            return
        code = self.code
        if code is None:  # no status recorded: a clean return, a cancellation, or a bug
            if exc is None:
                code = grpc.StatusCode.OK
            elif isinstance(exc, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
            else:
                code = grpc.StatusCode.UNKNOWN
        # The model label comes from the caller: keep it only for requests that got as far as
        # screening or succeeded, so random model names (NOT_FOUND) cannot mint new series.
        known = code is grpc.StatusCode.OK or self.decision is not None
        m.observe_request(
            rpc=self.method.rpartition("/")[2] or self.method,
            model=self.model if known else "",
            decision=self.decision.value if self.decision is not None else "none",
            code=code.name,
            seconds=time.perf_counter() - self._t0,
        )
        if self.tenant:
            m.observe_tenant(self.tenant, code.name)


_RPC: contextvars.ContextVar[RpcScope | None] = contextvars.ContextVar(
    "infershield_rpc", default=None
)


def current_rpc() -> RpcScope | None:
    """The RPC the calling code serves (contextvars follow ``asyncio.to_thread``)."""
    return _RPC.get()


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits, or "" outside a (sampled) trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def current_rpc_name() -> str:
    """The short name of the RPC being served (``ModelInfer``), or ""."""
    scope = _RPC.get()
    return scope.method.rpartition("/")[2] if scope is not None else ""


@contextlib.contextmanager
def rpc_scope(
    method: str, metadata: Iterable[tuple[str, Any]] | None, request: Any = None
) -> Iterator[RpcScope]:
    """Serve one RPC: its SERVER span (continuing the caller's trace) plus its metrics.

    ``method`` is the full gRPC method (``/inference.GRPCInferenceService/ModelInfer``);
    ``request`` (unary RPCs) names the model when it has ``model_name``/``name``/``model``.
    """
    model = ""
    if request is not None:
        model = str(next((v for v in (getattr(request, a, "") for a in _MODEL_FIELDS) if v), ""))
    m = _metrics.active()
    if m is not None:
        m.in_flight.inc()
    with server_span(method, metadata) as span:
        scope = RpcScope(method, span, model)
        token = _RPC.set(scope)
        try:
            yield scope
        except BaseException as exc:
            scope._finish(exc)
            raise
        else:
            scope._finish(None)
        finally:
            try:
                _RPC.reset(token)
            except ValueError:  # an async generator finalised in another context
                _RPC.set(None)
            if m is not None:
                m.in_flight.dec()
            if span is not None and span.is_recording():
                if scope.model:
                    span.set_attribute(ATTR_MODEL, scope.model)
                if scope.decision is not None:
                    span.set_attribute(ATTR_DECISION, scope.decision.value)


_MODEL_FIELDS = ("model_name", "name", "model")


def _has_trace_context(metadata: Iterable[tuple[str, Any]] | None) -> bool:
    # A caller's context is always continued; the SDK sampler (parent-based) decides.
    return any(key == "traceparent" for key, _ in metadata or ())


def server_span(
    method: str, metadata: Iterable[tuple[str, Any]] | None
) -> AbstractContextManager[Span | None]:
    """The SERVER span of one RPC, continuing the caller's trace from its gRPC metadata.

    ``method`` is the full gRPC method (``/inference.GRPCInferenceService/ModelInfer``).
    Prefer :func:`rpc_scope`, which also records the request metrics.
    """
    if not STATE.enabled:
        return _NOOP
    if STATE.root_ratio < 1.0 and not _has_trace_context(metadata) and not _draw_root():
        # Unsampled root: no span, and so no context to send upstream (no trace exists).
        return _NOOP
    service, _, rpc = method.lstrip("/").rpartition("/")
    return STATE.tracer.start_as_current_span(
        rpc or method,
        context=extract_context(metadata),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
        # The error-mapping interceptor turns exceptions into statuses; we record the code.
        record_exception=False,
        set_status_on_exception=False,
    )


def record_stage(
    ctxs: Sequence[CheckContext], results: Sequence[PipelineResult], seconds: float
) -> None:
    """One pipeline run over a batch: stage latency, request batch size, the RPC's decision."""
    if not ctxs:
        return
    stage = ctxs[0].stage
    m = _metrics.active()
    if m is not None:
        m.observe_stage(f"{stage}_checks", seconds)
        if stage == "input":
            m.child(m.batch_size, "request").observe(len(ctxs))
    rpc = _RPC.get()
    if rpc is not None:
        if not rpc.model:
            rpc.model = ctxs[0].model
        for r in results:
            rpc.note_decision(r.decision)


@contextlib.contextmanager
def upstream_timer() -> Iterator[None]:
    """Time a call to the backend as the ``upstream`` stage (spans are the backend's job)."""
    m = _metrics.active()
    if m is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        m.observe_stage("upstream", time.perf_counter() - t0)


def upstream_span(
    method: str, *, model: str = "", target: str = ""
) -> AbstractContextManager[Span | None]:
    """The CLIENT span of one upstream call; inject its context with ``inject_metadata()``."""
    if not _child_allowed():
        return _NOOP
    service, _, rpc = method.lstrip("/").rpartition("/")
    attrs: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
    if model:
        attrs[ATTR_MODEL] = model
    host, sep, port = target.rpartition(":")
    if sep and port.isdigit():
        attrs["server.address"], attrs["server.port"] = host, int(port)
    return STATE.tracer.start_as_current_span(
        f"upstream {rpc or method}", kind=SpanKind.CLIENT, attributes=attrs,
        record_exception=False, set_status_on_exception=False,
    )


def record_identity(identity: Any) -> None:
    """Name the caller (an :class:`~infershield.auth.access.Identity`) on the RPC's span and
    metrics: the tenant, never the address, so the labels stay bounded."""
    scope = _RPC.get()
    if scope is None:
        return
    scope.tenant = identity.tenant
    span = scope.span
    if span is not None and span.is_recording():
        span.set_attributes({
            ATTR_TENANT: identity.tenant,
            ATTR_AUTH_SOURCE: identity.source,
            **({ATTR_KEY_ID: identity.key_id} if identity.key_id else {}),
        })


def record_block(exc: Any) -> None:
    """What blocked (a :class:`~infershield.errors.Blocked`: the check and its details, such
    as rule ids) on the RPC's span; the caller may not see it, an operator can. The reason
    text stays off the span like every check reason; the audit log has it."""
    scope = _RPC.get()
    span = scope.span if scope is not None else None
    if span is None or not span.is_recording():
        return
    span.set_attributes({
        ATTR_BLOCKED_BY: exc.check,
        **{ATTR_BLOCK_DETAIL + k: v for k, v in exc.details},
    })


def record_upstream_error(code: grpc.StatusCode) -> None:
    """Count one failed upstream call (every attempt, retries included) by its gRPC code."""
    if (m := _metrics.active()) is not None:
        m.upstream_errors.labels(code.name).inc()


def set_rpc_status(
    span: Span | RpcScope | None,
    code: grpc.StatusCode,
    message: str = "",
    *,
    error: BaseException | None = None,
) -> None:
    """Record a gRPC status on an RPC scope, or a server or client span (OTel RPC conventions).

    ``error`` (the exception that became the status) lets a limit rejection be counted by
    the limit that fired.
    """
    if isinstance(span, RpcScope):
        span.code = code
        limit = getattr(error, "limit", None)
        m = _metrics.active()
        if m is not None and code is grpc.StatusCode.RESOURCE_EXHAUSTED and isinstance(limit, str):
            m.rate_limited.labels(limit).inc()
        span = span.span
    if span is None or not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        # Blocks are PERMISSION_DENIED: a deliberate outcome, but still a failed RPC.
        span.set_status(StatusCode.ERROR, f"{code.name}: {message}" if message else code.name)
