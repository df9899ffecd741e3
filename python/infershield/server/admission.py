"""Admission control: load shedding and policy pinning around every screened RPC.

Sits inside :class:`~infershield.server.interceptor.ErrorInterceptor` (so its rejections
become statuses there). For each call to the Triton service or the own API it:

- pins the live policy for the whole call (:meth:`PolicyHolder.pin`): a hot reload never
  changes the policy under a running request, and the old policy is closed only after the
  last request that uses it has finished;
- names the caller by its tenant (:func:`caller_of`; anonymous callers by address);
- refuses callers in quarantine (``limits.quarantine_after_blocks`` blocked requests within
  ``quarantine_window_s``; off by default) with PERMISSION_DENIED, and counts each Blocked
  request against its caller;
- for the calls that do real work (inference, scans, streams), applies the per-caller
  token buckets and shared quarantine of :mod:`infershield.abuse` (``ratelimit``, off by
  default; RESOURCE_EXHAUSTED naming the limit, with ``retry-after``), feeds the caller's
  anomaly detector when the call ends (``anomaly``), and takes a slot from the
  :class:`~infershield.limits.concurrency.ConcurrencyLimiter`: past ``max_concurrency`` running and
  ``max_queue`` waiting, the call gets RESOURCE_EXHAUSTED (``infershield-limit: max_queue``)
  at once, and a queued call whose deadline passes gets DEADLINE_EXCEEDED (stage ``queue``).

Cheap calls (liveness, readiness, metadata) are never shed, so health checks keep working
while the server is saturated. A stream holds one slot for as long as it is open, and its
caller's quarantine (both kinds) is checked again before each request it sends: a caller
quarantined while its stream is open loses the stream at its next request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from infershield.abuse.control import AbuseControl
from infershield.auth.access import current_identity
from infershield.errors import Blocked
from infershield.firewall import StreamError
from infershield.limits.concurrency import ConcurrencyLimiter
from infershield.limits.deadline import Deadline
from infershield.limits.quarantine import Quarantine
from infershield.reload import PolicyHolder
from infershield.server.wrapping import WrappingInterceptor
from infershield.telemetry.instrument import current_rpc_name

log = logging.getLogger(__name__)

#: Full method names that do real work and so are subject to load shedding.
ADMITTED_METHODS: frozenset[str] = frozenset(
    {
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelStreamInfer",
        "/infershield.v1.Firewall/Infer",
        "/infershield.v1.Firewall/Scan",
    }
)
#: Services whose calls pin the policy.
PINNED_SERVICES = ("/inference.GRPCInferenceService/", "/infershield.v1.Firewall/")


def caller_key(peer: str) -> str:
    """The rate-limit key of a peer: its address without the port (``ipv4:1.2.3.4:5678`` ->
    ``ipv4:1.2.3.4``). Behind a proxy every caller shares the proxy's address."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


def caller_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Who the rate limit and quarantine count against: the authenticated tenant, else the
    caller's address (behind a trusted proxy, the client's)."""
    identity = current_identity()
    if identity is not None:
        return identity.caller
    return caller_key(context.peer())


class AdmissionInterceptor(WrappingInterceptor):
    """Load shedding and policy pinning; see the module docstring."""

    def __init__(
        self,
        limiter: ConcurrencyLimiter,
        holder: PolicyHolder | None = None,
        quarantine: Quarantine | None = None,
        *,
        abuse: AbuseControl | None = None,
    ) -> None:
        super().__init__()
        self.limiter = limiter
        self.holder = holder
        self.quarantine = quarantine
        self.abuse = abuse

    def _applies(self, method: str) -> bool:
        return method.startswith(PINNED_SERVICES)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        admit = method in ADMITTED_METHODS
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, admit),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream, admit),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _deadline(self, context: grpc.aio.ServicerContext[Any, Any]) -> Deadline | None:
        if self.holder is None:
            remaining = context.time_remaining()
            return None if remaining is None else Deadline.after(remaining)
        limits = self.holder.current.config.limits
        return Deadline.effective(limits.deadline_s, context.time_remaining())

    def _check_quarantine(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self.quarantine is not None:
            self.quarantine.check(caller_of(context))

    @contextlib.contextmanager
    def _striking(self, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
        """Log a blocked request and count it against its caller (automated incident
        response)."""
        try:
            yield
        except Blocked as exc:
            self._blocked(context, exc)
            raise

    def _blocked(self, context: grpc.aio.ServicerContext[Any, Any], exc: Blocked) -> None:
        # One line per blocked request, for operators: who, where, what, never the text.
        # The log formatter stamps the trace id when the request is traced.
        log.info("request blocked", extra={
            "peer": context.peer(), "rpc": current_rpc_name(), "stage": exc.stage,
            "check": exc.check, "category": ",".join(exc.categories) or "none",
        })
        if self.quarantine is not None:
            self.quarantine.strike(caller_of(context))

    # --- abuse control (issue #19): per-caller buckets, quarantine, anomaly detection ---
    def _abuse_call(
        self, context: grpc.aio.ServicerContext[Any, Any], request: Any = None
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """Admit the call against its caller's buckets and quarantine (Redis or memory) and
        observe it for anomalies; the caller id comes from :func:`caller_of` (the tenant, else
        the address), as above."""
        if self.abuse is None:
            return contextlib.nullcontext()
        model = getattr(request, "model_name", None) or getattr(request, "model", "")
        request_id = getattr(request, "id", "")
        return self.abuse.call(
            caller_of(context),
            model=model if isinstance(model, str) else "",
            request_id=request_id if isinstance(request_id, str) else "",
        )

    # --- end abuse control ---

    async def _watched(self, requests: AsyncIterator[Any], caller: str) -> AsyncIterator[Any]:
        """A stream's requests, each passed on only while ``caller`` is not quarantined.

        The quarantine is checked as a call starts, and a stream lives on: a caller
        quarantined later (blocked calls on another connection, abuse control) must not keep
        the stream it has open. Raising here, before the request is passed on, ends the
        stream with the quarantine's own PERMISSION_DENIED, and the request goes nowhere."""
        watch = self.abuse.watch(caller) if self.abuse is not None else None
        async for request in requests:
            if self.quarantine is not None:
                self.quarantine.check(caller)
            if watch is not None:
                await watch.check()
            yield request

    @contextlib.contextmanager
    def _pinned(self) -> Iterator[None]:
        if self.holder is None:
            yield
            return
        with self.holder.pin():
            yield

    def _wrap_unary(self, behavior: Any, admit: bool) -> Any:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if not admit:
                with self._pinned():
                    return await behavior(request, context)
            self._check_quarantine(context)
            async with self._abuse_call(context, request), self.limiter.slot(
                self._deadline(context)
            ):
                with self._pinned(), self._striking(context):
                    return await behavior(request, context)

        return wrapped

    def _wrap_stream(self, behavior: Any, admit: bool) -> Any:
        async def wrapped(
            request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if not admit:
                with self._pinned():
                    async for response in behavior(request_iterator, context):
                        yield response
                return
            self._check_quarantine(context)
            requests = self._watched(request_iterator, caller_of(context))
            async with self._abuse_call(context) as call, self.limiter.slot(
                self._deadline(context)
            ):
                with self._pinned(), self._striking(context):
                    async for response in behavior(requests, context):
                        if isinstance(response, StreamError) and call is not None:
                            # Told in band, not raised through the call: the detector
                            # counts it as it would a raised one.
                            call.note_failure(response.error)
                        # A request blocked inside a stream is one blocked request too.
                        if isinstance(response, StreamError) and isinstance(
                            response.error, Blocked
                        ):
                            self._blocked(context, response.error)
                            yield response
                            # The quarantine is checked as a call starts, and a stream lives
                            # on: a caller quarantined now is cut off here, not left a
                            # stream to go on trying in.
                            self._check_quarantine(context)
                            continue
                        yield response

        return wrapped
