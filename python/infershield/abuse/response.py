"""Automated response to anomalies: log and metric, a signed webhook, quarantine, audit.

Which responses an event gets is chosen per feature in ``anomaly.responses`` (others get
``anomaly.default_response``). Every event is logged, counted
(``infershield_anomalies_total{feature}``) and written to the audit log; so is every alert
delivery and every quarantine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from infershield.abuse.anomaly import AnomalyEvent
from infershield.config import AnomalyConfig, WebhookConfig
from infershield.errors import ConfigError, FirewallError
from infershield.telemetry import metrics as _metrics

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-InferShield-Signature"
TIMESTAMP_HEADER = "X-InferShield-Timestamp"


class AuditSink(Protocol):
    def record(self, event: Mapping[str, Any]) -> Any: ...


class Quarantiner(Protocol):
    async def quarantine(self, caller: str, seconds: float) -> None: ...


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The alert signature: ``sha256=`` HMAC-SHA256 over ``timestamp + "." + body``.

    The timestamp is inside the MAC so a receiver can refuse replays of old alerts.
    """
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class WebhookSender:
    """POSTs JSON alerts from a background thread: bounded queue, retries with backoff.

    :meth:`submit` never blocks the caller; a full queue drops the alert (counted, logged).
    """

    def __init__(
        self,
        cfg: WebhookConfig,
        secret: bytes,
        *,
        on_result: Callable[[dict[str, Any], str, int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._secret = secret
        self._on_result = on_result
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(cfg.queue_size)
        self._thread = threading.Thread(target=self._run, daemon=True, name="anomaly-webhook")
        self._thread.start()

    @classmethod
    def from_config(
        cls, cfg: WebhookConfig, *, on_result: Callable[[dict[str, Any], str, int], None] | None
    ) -> WebhookSender:
        secret = os.environ.get(cfg.secret_env, "") if cfg.secret_env else ""
        if not secret:
            raise ConfigError(
                f"anomaly.webhook.secret_env: environment variable {cfg.secret_env!r} is unset "
                "or empty; webhook alerts must be signed"
            )
        return cls(cfg, secret.encode(), on_result=on_result)

    def submit(self, payload: dict[str, Any]) -> bool:
        """Queue one alert; False (and counted as dropped) when the queue is full."""
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            log.warning("anomaly webhook queue full (%d); alert dropped", self.cfg.queue_size)
            self._count("dropped")
            if self._on_result is not None:
                self._on_result(payload, "dropped", 0)
            return False
        return True

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            outcome, attempts = self._deliver(payload)
            self._count(outcome)
            if self._on_result is not None:
                try:
                    self._on_result(payload, outcome, attempts)
                except Exception:  # the sender thread must survive a failing sink
                    log.exception("recording an alert's delivery failed")

    def _deliver(self, payload: dict[str, Any]) -> tuple[str, int]:
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        delay = self.cfg.backoff_s
        for attempt in range(1, self.cfg.retries + 2):
            ts = f"{time.time():.3f}"
            req = urllib.request.Request(
                self.cfg.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: sign(self._secret, ts, body),
                    TIMESTAMP_HEADER: ts,
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    if 200 <= resp.status < 300:
                        return "sent", attempt
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log.warning("anomaly webhook attempt %d failed: %s", attempt, exc)
            if attempt <= self.cfg.retries:
                time.sleep(delay)
                delay *= 2
        log.error("anomaly webhook alert not delivered after %d attempts", self.cfg.retries + 1)
        return "failed", self.cfg.retries + 1

    @staticmethod
    def _count(outcome: str) -> None:
        m = _metrics.active()
        if m is not None:
            m.alerts.labels(outcome).inc()

    def close(self, timeout: float = 2.0) -> None:
        """Stop after the alerts already queued (waits at most ``timeout``)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


class Responder:
    """Runs the configured responses for each anomaly event."""

    def __init__(
        self,
        cfg: AnomalyConfig,
        *,
        audit: AuditSink | None = None,
        quarantiner: Quarantiner | None = None,
        webhook: WebhookSender | None = None,
        replica: str = "",
    ) -> None:
        self.cfg = cfg
        self.audit = audit
        self.quarantiner = quarantiner
        self.webhook = webhook
        self.replica = replica

    def actions(self, feature: str) -> tuple[str, ...]:
        return self.cfg.responses.get(feature, self.cfg.default_response)

    async def handle(self, event: AnomalyEvent) -> None:
        """Log, count and audit ``event``, then alert and/or quarantine as configured.

        Never raises: a failing response is logged, the request that raised the event goes on.
        """
        actions = self.actions(event.feature)
        data = event.as_dict()
        # The caller id is operational data (an address or tenant), never prompt text.
        log.warning(
            "anomaly: caller %s %s=%.4g (baseline %.4g +/- %.4g, z %.1f); responses: %s",
            event.caller,
            event.feature,
            event.value,
            event.mean,
            event.std,
            event.z,
            ",".join(actions) or "none",
        )
        m = _metrics.active()
        if m is not None:
            m.anomalies.labels(event.feature).inc()
        self._audit({"event": "anomaly", **data, "responses": list(actions)})
        if "webhook" in actions and self.webhook is not None:
            self.webhook.submit(
                {
                    "type": "infershield.anomaly",
                    "replica": self.replica,
                    **data,
                    "responses": list(actions),
                    "ts": round(time.time(), 3),
                }
            )
        if "quarantine" in actions and self.quarantiner is not None:
            try:
                await self.quarantiner.quarantine(event.caller, self.cfg.quarantine_s)
            except FirewallError as exc:  # the store is unreachable and refusing
                log.error("could not quarantine caller %s: %s", event.caller, exc.message)
                self._audit(
                    {
                        "event": "quarantine",
                        "caller": event.caller,
                        "ok": False,
                        "reason": f"anomaly:{event.feature}",
                        "error": exc.message,
                    }
                )
                return
            log.warning(
                "caller %s quarantined for %gs (anomaly: %s)",
                event.caller,
                self.cfg.quarantine_s,
                event.feature,
            )
            if m is not None:
                m.quarantines.labels(f"anomaly_{event.feature}").inc()
            self._audit(
                {
                    "event": "quarantine",
                    "caller": event.caller,
                    "ok": True,
                    "seconds": self.cfg.quarantine_s,
                    "reason": f"anomaly:{event.feature}",
                }
            )

    def alert_result(self, payload: dict[str, Any], outcome: str, attempts: int) -> None:
        """Audit one webhook delivery (called from the sender thread; the log is thread-safe)."""
        self._audit(
            {
                "event": "alert",
                "caller": payload.get("caller", ""),
                "feature": payload.get("feature", ""),
                "outcome": outcome,
                "attempts": attempts,
            }
        )

    def _audit(self, record: dict[str, Any]) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(record)
        except Exception:
            log.exception("writing an abuse audit record failed")

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()
