"""One call's abuse control: admission (quarantine, request bucket), token charges, and the
anomaly detector's observation when the call ends.

The server opens :meth:`AbuseControl.call` around each screened call with the caller id it
derived (one place: ``infershield.server.admission.caller_key``). Code deeper in the call
(the firewall, which knows token counts and screening scores) reaches that call's
:class:`CallInfo` through :func:`current_call` (a context variable, so it also reaches the
worker threads that ``asyncio.to_thread`` starts).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from infershield.abuse.anomaly import AnomalyDetector
from infershield.abuse.limiter import CallerLimits, QuarantineWatch
from infershield.abuse.response import AuditSink, Responder, WebhookSender
from infershield.abuse.store import Clock, MemoryStore, Store
from infershield.config import Config
from infershield.errors import Blocked, FirewallError, LimitExceeded, Quarantined
from infershield.telemetry import metrics as _metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CallInfo:
    """What one call has done so far (filled in by the firewall as it goes)."""

    caller: str
    model: str = ""
    request_id: str = ""
    input_bytes: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: Highest screening score seen (None until something was screened).
    score: float | None = None
    limits: CallerLimits | None = None
    #: How the call went, for the detector: something in it was blocked / failed.
    blocked: bool = False
    error: bool = False

    def note_score(self, score: float) -> None:
        self.score = score if self.score is None else max(self.score, score)

    def note_failure(self, exc: FirewallError) -> None:
        """Count a failure in this call: raised out of it, or told in band without ending it
        (a request blocked inside a stream), so both count alike."""
        if isinstance(exc, Blocked):
            self.blocked = True
            self.note_score(exc.score)
        elif not isinstance(exc, (LimitExceeded, Quarantined)):
            # A refusal says nothing about the caller's traffic; anything else is an error.
            self.error = True


_CURRENT: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar(
    "infershield_abuse_call", default=None
)


def current_call() -> CallInfo | None:
    """The :class:`CallInfo` of the call being handled, if abuse control wraps it."""
    return _CURRENT.get()


def note_score(score: float) -> None:
    """Record a screening score against the current call (no-op outside one)."""
    info = _CURRENT.get()
    if info is not None:
        info.note_score(score)


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` for a model without a tokenizer: ~4 UTF-8 bytes per token, so a
    token limit still applies (rather than silently counting nothing)."""
    return -(-len(text.encode("utf-8", "surrogatepass")) // 4)


async def charge_tokens(
    model: str, texts: Sequence[str], counted: int | None, *, output: bool = False
) -> None:
    """Charge the current call's caller for model tokens (no-op outside a call).

    ``counted`` is the tokenizer's count (the one the size limits use); None means the model
    has no tokenizer and the count is estimated. Input tokens also add to the call's input
    size (bytes) for the anomaly detector. Raises LimitExceeded when input tokens do not fit.
    """
    info = _CURRENT.get()
    if info is None:
        return
    if not output:
        info.input_bytes += sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    n = counted if counted is not None else sum(estimate_tokens(t) for t in texts)
    if output:
        info.output_tokens += n
    else:
        info.input_tokens += n
    if info.limits is not None:
        await info.limits.charge_tokens(info.caller, model or info.model, n, output=output)


def _on_store_state(up: bool) -> None:
    m = _metrics.active()
    if m is None:
        return
    m.ratelimit_store_down.set(0 if up else 1)
    if not up:
        m.ratelimit_store_outages.inc()


class AbuseControl:
    """Rate limits, quarantine and anomaly response for the server's calls."""

    def __init__(
        self,
        limits: CallerLimits,
        detector: AnomalyDetector | None = None,
        responder: Responder | None = None,
    ) -> None:
        self.limits = limits
        self.detector = detector
        self.responder = responder

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        *,
        audit: AuditSink | None = None,
        store: Store | None = None,
        clock: Clock = time.monotonic,
        replica: str = "",
    ) -> AbuseControl:
        """Build from ``ratelimit`` and ``anomaly``; the deprecated ``limits.rate_per_s`` /
        ``rate_burst`` become ``ratelimit.default.requests_per_s`` / ``requests_burst``."""
        import dataclasses

        rl = cfg.ratelimit
        if cfg.limits.rate_per_s > 0:
            rl = dataclasses.replace(
                rl,
                default=dataclasses.replace(
                    rl.default,
                    requests_per_s=cfg.limits.rate_per_s,
                    requests_burst=float(cfg.limits.rate_burst),
                ),
            )
        if store is None:
            if rl.backend == "redis":
                from infershield.abuse.redis_store import RedisStore

                store = RedisStore(rl.redis_url, prefix=rl.key_prefix, timeout_s=rl.redis_timeout_s)
            else:
                store = MemoryStore(clock=clock)
        limits = CallerLimits(rl, store, clock=clock, on_store_state=_on_store_state)
        an = cfg.anomaly
        if not an.enabled:
            return cls(limits)
        actions = {a for acts in (*an.responses.values(), an.default_response) for a in acts}
        responder = Responder(an, audit=audit, quarantiner=limits, replica=replica)
        if "webhook" in actions:
            responder.webhook = WebhookSender.from_config(
                an.webhook, on_result=responder.alert_result
            )
        return cls(limits, AnomalyDetector(an, clock=clock), responder)

    @contextlib.asynccontextmanager
    async def call(
        self, caller: str, *, model: str = "", request_id: str = "", input_bytes: int = 0
    ) -> AsyncIterator[CallInfo]:
        """Admit one call by ``caller`` (raises Quarantined or LimitExceeded), expose its
        :class:`CallInfo` to the code inside, and feed the detector when it ends."""
        info = CallInfo(caller, model, request_id, input_bytes, limits=self.limits)
        await self.limits.admit(caller, model)
        token = _CURRENT.set(info)
        try:
            yield info
        except FirewallError as exc:
            info.note_failure(exc)
            raise
        finally:
            _CURRENT.reset(token)
            if self.detector is not None:
                await self._observe(info)

    def watch(self, caller: str) -> QuarantineWatch:
        """Re-check ``caller``'s quarantine during a stream it has open (see
        :class:`~infershield.abuse.limiter.QuarantineWatch`)."""
        return self.limits.watch(caller)

    async def _observe(self, info: CallInfo) -> None:
        assert self.detector is not None
        events = self.detector.observe(
            info.caller,
            input_bytes=info.input_bytes,
            score=info.score,
            blocked=info.blocked,
            error=info.error,
        )
        if self.responder is None:
            return
        for event in events:
            await self.responder.handle(event)

    async def close(self) -> None:
        if self.responder is not None:
            self.responder.close()
        await self.limits.close()
