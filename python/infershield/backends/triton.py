"""The ``triton`` backend: a remote Triton over one pooled grpc.aio channel.

One channel multiplexes every call (HTTP/2 streams), with keepalive so a dead upstream is
noticed between requests. Only idempotent metadata calls are retried, and only on
UNAVAILABLE, within the caller's deadline: an inference is never sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from infershield.backends.base import IDEMPOTENT_METHODS, UNARY_METHODS, Backend
from infershield.call import CallContext
from infershield.errors import (
    BackendUnavailable,
    ConfigError,
    DeadlineExceeded,
    FirewallError,
    UpstreamError,
)
from infershield.limits.breaker import CircuitBreaker, is_upstream_failure
from infershield.telemetry import metrics as _metrics
from infershield.telemetry.instrument import (
    current_rpc_name,
    record_upstream_error,
    set_rpc_status,
    upstream_span,
)
from infershield.telemetry.tracing import inject_metadata

if TYPE_CHECKING:
    from infershield.config import BackendTlsConfig, Config

log = logging.getLogger(__name__)
SERVICE = "/inference.GRPCInferenceService/"


def parse_upstream(value: str) -> str:
    """``triton://host:port`` or ``host:port`` -> ``host:port``."""
    target = value.removeprefix("triton://").removeprefix("grpc://").rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        from infershield.errors import ConfigError

        raise ConfigError(f"backend.upstream: expected triton://HOST:PORT, got {value!r}")
    return target


def _for_client(method: str) -> str:
    """``method``, plus the RPC the client sent when the firewall called upstream on its
    behalf with another one (own-API ``Infer`` -> ``ModelInfer``, a metadata lookup)."""
    client = current_rpc_name()
    return method if not client or client == method else f"{method}, for the client's {client}"


def map_rpc_error(exc: grpc.aio.AioRpcError, method: str) -> FirewallError:
    """An upstream status as a domain error; the caller sees Triton's own message."""
    code = exc.code()
    if code is grpc.StatusCode.UNAVAILABLE:
        log.warning("upstream unavailable in %s: %s", _for_client(method), exc.details())
        return BackendUnavailable(f"upstream Triton is unavailable ({_for_client(method)})")
    if code is grpc.StatusCode.CANCELLED:
        # We cancel an upstream call only when our own caller is gone (that surfaces as
        # asyncio.CancelledError, not as a status). A CANCELLED status means the upstream or
        # the transport dropped the call: the caller did not ask for it, and may retry.
        log.warning("upstream cancelled %s: %s", _for_client(method), exc.details())
        return BackendUnavailable(f"upstream Triton dropped the call ({_for_client(method)})")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"deadline exceeded waiting for upstream {_for_client(method)}", stage="upstream"
        )
    details = exc.details() or code.name
    client = current_rpc_name()
    if client and client != method:
        # A drop-in client calling Triton's own RPC gets Triton's message unchanged.
        details = f"{details} (upstream {_for_client(method)})"
    return UpstreamError(details, code)


#: Each unary RPC's response message (Triton names them ``<method>Response``).
_RESPONSE_TYPES: dict[str, Any] = {m: getattr(pb, f"{m}Response") for m in UNARY_METHODS}

#: Upstream timeouts count against the breaker only when the call had at least this long.
_MIN_BREAKER_BUDGET_S = 1.0


class TritonBackend(Backend):
    """Forwards Triton RPCs to ``target`` (``host:port``)."""

    kind = "triton"

    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int = 2**31 - 1,
        retries: int = 2,
        retry_backoff_s: float = 0.05,
        keepalive_ms: int = 30_000,
        breaker_failures: int = 5,
        breaker_reset_s: float = 2.0,
        tls: BackendTlsConfig | None = None,
        retire_after_s: float = 60.0,
    ) -> None:
        """``tls`` (``backend.tls``) makes the channel TLS, with its CA and client pair.
        ``retire_after_s``: how long a channel replaced by a certificate reload stays open
        for the calls still on it (the request deadline, ``limits.deadline_s``)."""
        self.target = parse_upstream(target)
        self.tls = tls if tls is not None and (tls.enabled or tls.ca or tls.cert) else None
        self.max_message_bytes = max_message_bytes
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.keepalive_ms = keepalive_ms
        self.retire_after_s = retire_after_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GRPCInferenceServiceStub | None = None
        #: Bytes-in, bytes-out callables per method on the current channel (lean forwarding).
        self._raw: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._opts: list[tuple[str, Any]] = []
        #: Channels replaced by a certificate reload, closed once their calls had time.
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        m = _metrics.active()
        # Repeated upstream failures open the breaker: calls then fail at once (UNAVAILABLE)
        # instead of each waiting out its deadline, until a probe succeeds.
        self.breaker = CircuitBreaker(
            f"upstream {self.target}",
            failure_threshold=breaker_failures,
            reset_timeout_s=breaker_reset_s,
            on_state_change=(
                (lambda s: m.set_breaker_state(self.target, s.value)) if m is not None else None
            ),
        )
        if m is not None:
            m.watch_breaker(self.target, lambda: self.breaker.state)

    @classmethod
    def from_config(cls, config: Config) -> TritonBackend:
        return cls(
            config.backend.upstream,
            max_message_bytes=config.server.max_message_bytes,
            tls=config.backend.tls,
            retire_after_s=config.limits.deadline_s,
        )

    async def start(self) -> None:
        opts: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", self.keepalive_ms),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # Reconnect quickly once the upstream is back.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.min_reconnect_backoff_ms", 100),
        ]
        self._opts = opts
        self._channel = self._open_channel()
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._raw = {}

    def _open_channel(self) -> grpc.aio.Channel:
        """A channel to the upstream, with ``backend.tls``'s certificates read now."""
        opts = list(self._opts)
        if self.tls is None:
            return grpc.aio.insecure_channel(self.target, options=opts)
        from infershield.auth.tls import channel_credentials

        if self.tls.server_name:
            opts.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return grpc.aio.secure_channel(self.target, channel_credentials(self.tls), options=opts)

    async def reload_credentials(self) -> None:
        """Reconnect with ``backend.tls``'s certificates as they are on disk now (SIGHUP).

        New calls use the new channel at once; calls in flight finish on the old one, which
        is closed once they have had ``retire_after_s`` to do so. Certificates that do not load
        leave the old channel in place (logged)."""
        if self.tls is None or self._channel is None:
            return
        try:
            channel = self._open_channel()
        except (ConfigError, OSError, ValueError) as exc:
            log.error("upstream TLS certificates not reloaded, keeping the old ones: %s", exc)
            return
        old, self._channel = self._channel, channel
        self._stub = pb_grpc.GRPCInferenceServiceStub(channel)
        self._raw = {}
        log.info("upstream TLS certificates reloaded for %s", self.target)
        task = asyncio.get_running_loop().create_task(self._close_later(old))
        self._retiring[task] = old
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def _close_later(self, channel: grpc.aio.Channel) -> None:
        await asyncio.sleep(self.retire_after_s)
        await channel.close()

    async def close(self) -> None:
        for task, channel in list(self._retiring.items()):
            task.cancel()
            await channel.close()
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None
        self._raw = {}

    @property
    def stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        if self._stub is None:
            raise BackendUnavailable("the upstream connection is not open")
        return self._stub

    async def call(self, method: str, request: Any, ctx: CallContext) -> Any:
        """One unary RPC upstream, through the circuit breaker."""
        if method not in UNARY_METHODS:
            raise ValueError(f"not a unary Triton RPC: {method}")
        model = getattr(request, "model_name", "") or getattr(request, "name", "")
        return await self._guarded(method, getattr(self.stub, method), request, model, ctx)

    async def call_wire(
        self, method: str, request: Any, wire: bytes | None, ctx: CallContext
    ) -> tuple[Any, bytes]:
        """Send ``wire`` (``request`` serialised as the caller sent it), or ``request``
        serialised when ``wire`` is None, and return the response parsed and as the bytes
        Triton sent: the firewall passes those on when screening changed nothing."""
        if method not in UNARY_METHODS:
            raise ValueError(f"not a unary Triton RPC: {method}")
        fn = self._raw.get(method)
        if fn is None:
            channel = self._channel
            if channel is None:
                raise BackendUnavailable("the upstream connection is not open")
            fn = self._raw[method] = channel.unary_unary(SERVICE + method)  # bytes in and out
        data = request.SerializeToString() if wire is None else wire
        model = getattr(request, "model_name", "") or getattr(request, "name", "")
        raw: bytes = await self._guarded(method, fn, data, model, ctx)
        try:
            return _RESPONSE_TYPES[method].FromString(raw), raw
        except DecodeError:
            raise BackendUnavailable(
                f"the backend sent an unreadable response ({_for_client(method)})"
            ) from None

    async def _guarded(
        self, method: str, fn: Any, payload: Any, model: str, ctx: CallContext
    ) -> Any:
        """``fn(payload)`` upstream, through the circuit breaker."""
        self.breaker.before_call()
        budget = ctx.deadline.remaining()
        try:
            response = await self._call(method, fn, payload, model, ctx)
        except asyncio.CancelledError:
            self.breaker.on_cancel()
            raise
        except BaseException as exc:
            if not is_upstream_failure(exc):
                self.breaker.on_success()  # the upstream answered; the request was bad
            elif isinstance(exc, DeadlineExceeded) and budget < _MIN_BREAKER_BUDGET_S:
                # A caller's own tight deadline says nothing about the upstream's health
                # (and must not let impatient callers open the breaker for everyone).
                self.breaker.on_cancel()
            else:
                self.breaker.on_failure()
            raise
        self.breaker.on_success()
        return response

    async def _call(
        self, method: str, fn: Any, payload: Any, model: str, ctx: CallContext
    ) -> Any:
        attempts = 1 + (self.retries if method in IDEMPOTENT_METHODS else 0)
        for attempt in range(attempts):
            with upstream_span(SERVICE + method, model=model, target=self.target) as span:
                try:
                    response = await fn(
                        payload,
                        metadata=inject_metadata(ctx.metadata),
                        timeout=ctx.deadline.remaining(),
                        wait_for_ready=False,
                    )
                except grpc.aio.AioRpcError as exc:
                    set_rpc_status(span, exc.code(), exc.details() or "")
                    record_upstream_error(exc.code())
                    retry = (
                        exc.code() is grpc.StatusCode.UNAVAILABLE
                        and attempt + 1 < attempts
                        and ctx.deadline.remaining() > self.retry_backoff_s * (attempt + 1)
                    )
                    if not retry:
                        raise map_rpc_error(exc, method) from None
                else:
                    set_rpc_status(span, grpc.StatusCode.OK)
                    return response
            await asyncio.sleep(self.retry_backoff_s * (attempt + 1))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], ctx: CallContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        with upstream_span(SERVICE + "ModelStreamInfer", target=self.target):
            call = self.stub.ModelStreamInfer(
                requests,
                metadata=inject_metadata(ctx.metadata),
                timeout=ctx.extra.get("stream_timeout"),
                wait_for_ready=False,
            )
            try:
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as exc:
                raise map_rpc_error(exc, "ModelStreamInfer") from None
            finally:
                call.cancel()

    async def ready(self) -> bool:
        try:
            resp = await self.call("ServerReady", pb.ServerReadyRequest(), CallContext.after(2.0))
        except FirewallError:
            return False
        return bool(resp.ready)
