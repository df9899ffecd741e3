"""The server's lifecycle: build the policy and backend, serve, drain on SIGTERM.

:class:`FirewallServer` serves the Triton drop-in service, the own ``infershield.v1.Firewall``
API, the standard gRPC health service and (optionally) reflection on one port.
:func:`serve` runs it until SIGTERM/SIGINT, then stops accepting calls and gives in-flight
ones ``server.grace_period_s`` to finish. :class:`ServerThread` runs one on a background event
loop (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from tritonclient.grpc import service_pb2 as pb

from infershield.abuse.control import AbuseControl
from infershield.audit import AuditLog, process_chain_path
from infershield.auth.access import AccessControl
from infershield.auth.tls import ServerTls
from infershield.backends.base import Backend, build_backend
from infershield.config import Config, is_loopback
from infershield.errors import ConfigError
from infershield.firewall import Firewall
from infershield.limits.concurrency import ConcurrencyLimiter
from infershield.limits.quarantine import Quarantine
from infershield.policy import Policy
from infershield.reload import PolicyHolder, PolicyWatcher
from infershield.server import firewall_service, triton_service
from infershield.server.access import AccessInterceptor
from infershield.server.admission import AdmissionInterceptor
from infershield.server.interceptor import ErrorInterceptor
from infershield.server.processes import ProcessSlot
from infershield.telemetry import metrics as _metrics
from infershield.v1 import firewall_pb2

log = logging.getLogger(__name__)

SERVICES = (
    pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    firewall_pb2.DESCRIPTOR.services_by_name["Firewall"].full_name,
)


#: gRPC options that leave load shedding to the admission limiter. The asyncio server
#: takes new calls from gRPC core one at a time, so a burst waits in core's backlog first.
#: Past ``grpc.server.max_pending_requests`` (default 1,000) core drops calls at random and
#: past the hard limit (3,000) all of them, and the caller sees CANCELLED, a status it never
#: asked for (issue 18: 22% of a 3,000-call burst). With a deep backlog every call reaches
#: the ConcurrencyLimiter, which sheds the excess within microseconds, with
#: RESOURCE_EXHAUSTED and a retry-after. The backlog stays bounded: a waiting call holds at
#: most one flow-control window (64 KB, BDP probing off). (Capping
#: ``grpc.max_concurrent_streams`` instead makes core refuse the streams a client opened
#: before it saw the setting: UNAVAILABLE, REFUSED_STREAM.)
BACKLOG_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.server.max_pending_requests", 1 << 14),
    ("grpc.server.max_pending_requests_hard_limit", 1 << 14),
)


def _on_quarantine(caller: str) -> None:
    # The caller's tenant or address is operational data, not prompt text: safe to log.
    log.warning("caller %s quarantined after repeated blocked requests", caller)
    m = _metrics.active()
    if m is not None:
        m.quarantines.labels("repeated_blocks").inc()


class FirewallServer:
    """One gRPC server in front of one backend. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: Config,
        *,
        policy: Policy | None = None,
        backend: Backend | None = None,
        loader: Callable[[], Config] | None = None,
        watch_path: str | None = None,
        reload_interval_s: float = 1.0,
        slot: ProcessSlot | None = None,
    ) -> None:
        """``loader`` re-reads the config on reload (default: rebuild from ``config``, which
        still re-reads rule files); ``watch_path`` is the policy file to watch for changes;
        ``slot``: this is one of ``server.processes`` children (shared port, own audit chain).
        """
        self.config = config
        self.slot = slot
        self._policy = policy
        self._backend = backend
        self._loader = loader
        self._watch_path = watch_path
        self._reload_interval_s = reload_interval_s
        self._watch_task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self.holder: PolicyHolder | None = None
        self.watcher: PolicyWatcher | None = None
        self.limiter = ConcurrencyLimiter.from_limits(config.limits)
        lim = config.limits
        self.quarantine = (
            Quarantine(
                lim.quarantine_after_blocks,
                lim.quarantine_window_s,
                lim.quarantine_s,
                on_quarantine=_on_quarantine,
            )
            if lim.quarantine_after_blocks > 0
            else None
        )
        self.firewall: Firewall | None = None
        #: API keys and the perimeter; reloaded with :meth:`reload_access`.
        self.access = AccessControl(config)
        self.tls = ServerTls(config.server.tls) if config.server.tls.cert else None
        self._access_task: asyncio.Task[None] | None = None
        #: Per-caller rate limits, quarantine and anomaly response (``ratelimit``, ``anomaly``).
        self.abuse: AbuseControl | None = None
        self.server: grpc.aio.Server | None = None
        self.health = HealthServicer()
        self.port = 0

    async def start(self) -> int:
        """Build the policy and backend, bind and start serving; returns the bound port."""
        cfg = self.config
        policy = self._policy or Policy.from_config(cfg)
        try:
            backend = self._backend or build_backend(cfg)
            slot = self.slot
            audit = AuditLog.from_config(
                str(process_chain_path(cfg.audit.path, slot.index))
                if slot is not None and cfg.audit.path
                else cfg.audit.path,
                cfg.audit.key_env,
                cfg.audit.record_allowed,
                fsync=cfg.audit.fsync,
                fsync_interval_s=cfg.audit.fsync_interval_s,
                rotate_bytes=cfg.audit.rotate_bytes,
                rotate_s=cfg.audit.rotate_s,
            )
            if audit is not None and slot is not None:
                # Each run of a chain says how many there are, so verify can tell one missing.
                audit.record({"event": "open", "process": slot.index, "processes": slot.count})
            self.firewall = Firewall(policy, backend, audit=audit)
            await self.firewall.start()
            self.abuse = AbuseControl.from_config(cfg, audit=self.firewall.audit)
        except BaseException:
            policy.close()
            raise
        opts = [
            ("grpc.max_send_message_length", cfg.server.max_message_bytes),
            # The transport refuses an oversized request before buffering it. Without BDP
            # probing the flow-control window stays small, so a client cannot push many MB
            # of an oversized message before the refusal (measured: ten 300 MB attempts grew
            # RSS by ~25 MB with probing, <1 MB without; a 6 MB request was no slower).
            ("grpc.max_receive_message_length", cfg.receive_limit_bytes),
            ("grpc.http2.bdp_probe", 0),
            # Children of server.processes share the port; alone, a busy port is an error.
            ("grpc.so_reuseport", 1 if self.slot is not None else 0),
            *BACKLOG_OPTIONS,
        ]
        # Reloads swap the policy here; requests pin theirs in the admission interceptor.
        self.holder = PolicyHolder(
            policy, loader=self._loader or (lambda: cfg), on_swap=self.firewall.swap_policy
        )
        self.watcher = PolicyWatcher(
            self.holder, self._watch_path, interval_s=self._reload_interval_s
        )
        m = _metrics.active()
        if m is not None:
            m.watch_queue(lambda: self.limiter.queued)  # read at scrape time
        interceptors = [
            ErrorInterceptor(),
            AccessInterceptor(self.access, mtls=bool(cfg.server.tls.client_ca)),
            AdmissionInterceptor(self.limiter, self.holder, self.quarantine, abuse=self.abuse),
        ]
        server = grpc.aio.server(interceptors=interceptors, options=opts)
        triton_service.add_to_server(self.firewall, server)
        firewall_service.add_to_server(self.firewall, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if cfg.server.reflection:
            reflection.enable_server_reflection(
                (
                    *SERVICES,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                server,
            )
        self._warn_exposure()
        listen = self.slot.listen if self.slot is not None else cfg.server.listen
        try:
            if self.tls is not None:
                self.port = server.add_secure_port(listen, self.tls.credentials())
            else:
                self.port = server.add_insecure_port(listen)
        except RuntimeError as exc:
            await self.firewall.close()
            raise ConfigError(f"server.listen: cannot bind {listen}: {exc}") from None
        await server.start()
        self.server = server
        if self._watch_path:
            self._watch_task = asyncio.create_task(self.watcher.run(), name="policy-watch")
        if self.access.enabled or self.tls is not None:
            self._access_task = asyncio.create_task(self._watch_access(), name="access-watch")
        for name in ("", *SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving on %s (backend %s)",
            listen.rpartition(":")[0] + f":{self.port}",
            self.firewall.backend.kind,
        )
        # In the background: a slow upstream must not delay serving health checks.
        self._probe_task = asyncio.create_task(self._probe_backend(), name="backend-probe")
        return self.port

    async def _probe_backend(self) -> None:
        """Say at start-up whether the backend answers, so a down upstream is not first
        noticed as failing requests."""
        assert self.firewall is not None
        backend = self.firewall.backend
        where = (f"upstream Triton {self.config.backend.upstream}" if backend.kind == "triton"
                 else f"{backend.kind} backend")
        try:
            ready = await backend.ready()
        except Exception as exc:  # a probe must never take the server down
            log.warning("%s: start-up check failed (%s)", where, type(exc).__name__)
            return
        if ready:
            log.info("%s is ready", where)
        else:
            log.warning("%s is not reachable or not ready: model calls fail with UNAVAILABLE "
                        "until it is; the firewall keeps serving and reconnects", where)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds, close."""
        grace = self.config.server.grace_period_s if grace is None else grace
        for task in (self._watch_task, self._access_task):
            if task is not None:
                task.cancel()
        self._watch_task = self._access_task = None
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
        if self.abuse is not None:
            await self.abuse.close()
            self.abuse = None
        if self.firewall is not None:
            await self.firewall.close()
            self.firewall = None

    def _warn_exposure(self) -> None:
        srv = self.config.server
        open_to_all = not (self.access.enabled or srv.tls.client_ca)
        if not is_loopback(srv.listen.rpartition(":")[0]):
            if open_to_all:
                # Only reachable with server.insecure: config validation refuses it otherwise.
                log.warning(
                    "server.insecure: %s is reachable from other hosts with no "
                    "authentication; anyone who can connect can call every model",
                    srv.listen,
                )
            elif self.tls is None:
                log.warning(
                    "%s has no TLS (server.tls): API keys and prompts cross the network in "
                    "plain text",
                    srv.listen,
                )

    async def reload_access(self) -> None:
        """Re-read the keys file, the listener's TLS certificates and the upstream's
        (SIGHUP); each keeps its old version when the new one does not load."""
        await asyncio.to_thread(self.access.reload)
        if self.tls is not None:
            await asyncio.to_thread(self.tls.reload)
        if self.firewall is not None:
            await self.firewall.backend.reload_credentials()

    async def _watch_access(self) -> None:
        """Reload keys and certificates when their files change (polled like the policy)."""
        while True:
            await asyncio.sleep(self._reload_interval_s)
            try:
                # Reading and hashing the files is blocking I/O: off the event loop.
                if await asyncio.to_thread(self.access.changed):
                    await asyncio.to_thread(self.access.reload)
                if self.tls is not None and await asyncio.to_thread(self.tls.changed):
                    await asyncio.to_thread(self.tls.reload)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("keys/certificate watch failed")

    async def wait(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()


async def serve(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    loader: Callable[[], Config] | None = None,
    config_path: str | None = None,
    slot: ProcessSlot | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then drain gracefully.

    SIGHUP, or a change to ``config_path``, reloads the policy through ``loader``; SIGHUP also
    reloads the keys file and the TLS certificates (which are also reloaded when they change).
    ``slot``: serve as one child of ``server.processes`` (see :mod:`.processes`).
    """
    app = FirewallServer(config, loader=loader, watch_path=config_path, slot=slot)
    await app.start()
    # What start-up built (policy, rule databases, modules) lives as long as the process:
    # out of the cyclic collector's way, its full passes no longer walk it under load.
    gc.freeze()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    assert app.watcher is not None
    app.watcher.install_sighup(loop, also=app.reload_access)
    if slot is not None:
        slot.ready()  # signal handlers are in place: the supervisor may forward signals now
    try:
        await stop.wait()
        log.info("draining (grace %.1fs)", config.server.grace_period_s)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await app.stop()


class ServerThread:
    """A :class:`FirewallServer` on its own event loop in a daemon thread."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.app = FirewallServer(config, **kwargs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="infershield-server"
        )

    def start(self, timeout: float = 120.0) -> int:
        self._thread.start()
        fut: Future[int] = asyncio.run_coroutine_threadsafe(self.app.start(), self.loop)
        try:
            return fut.result(timeout)
        except BaseException:
            self._shutdown_loop()
            raise

    def stop(self, grace: float = 1.0) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.app.stop(grace), self.loop).result(grace + 30)
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()
